"""The polyspec coordinator: runs the speculation loop between drafter and target services.

``coordinator.verify`` and ``coordinator.vocab`` hold the pure math (no grpc, asyncio or protobuf);
``coordinator.loop`` runs requests on domain types (``coordinator.request``, ``core.modelcalls``; one round
in ``coordinator.loop.round``); ``coordinator.wire`` converts them to and from protobuf for the servicer
and the model-service client.
"""
