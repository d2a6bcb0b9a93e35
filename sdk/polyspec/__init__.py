"""polyspec client SDK: talk to a polyspec coordinator over gRPC (grpcio + protobuf only)."""
