"""Running as a service: config, logs, systemd, secret files."""
