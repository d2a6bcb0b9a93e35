"""The model service: one transformers causal LM served over gRPC as a drafter or a target."""
