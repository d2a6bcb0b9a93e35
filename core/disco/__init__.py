"""DISCO: a trained stop rule for the draft (Mamou et al. 2024, "Dynamic Speculation Lookahead").

After each draft token a small classifier over drafter-side features says whether to keep drafting.
Pure torch (no gRPC, asyncio or protobuf), shared by the drafter service, collection and training:

- ``features``: the one code path computing a draft token's features;
- ``classifier``: the logistic or MLP classifier and the stop rule it gives;
- ``artifact``: the versioned artifact (safetensors weights + JSON spec) and its checks.
"""
