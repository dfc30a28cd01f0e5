"""The POS-facing gRPC API: a thin adapter over the domain."""
