"""polyspec server-side processes: the model service, shared gRPC plumbing, the model store and the CLI."""
