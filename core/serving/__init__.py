"""Plumbing shared by the model service and the coordinator: errors, the gRPC server, logs, metrics."""
