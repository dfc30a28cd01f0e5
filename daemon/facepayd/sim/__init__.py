"""Simulators shipped with the daemon: the terminal (bridge peripheral), adbd and WeChat Pay."""
