"""The ground floor that the model service and the coordinator both stand on.

Pure modules (no gRPC, asyncio or protobuf): ``errors`` (the domain exceptions every layer raises),
``sampling`` (the warpers and the sampling math used by drafter, target and coordinator), ``drafting``
(the drafter's loop and stop rule), ``restrict`` (TLI's logit restriction to a vocabulary
intersection), ``checksum`` (the prefix checksum of the context-delta protocol) and ``modelcalls``
(domain types of the model-service calls). ``serving`` holds the gRPC furniture both servers run on
(server factory, error interceptor, logging, metrics endpoint).
Nothing here imports ``services``, ``coordinator`` or ``tools``.
"""
