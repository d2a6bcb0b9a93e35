"""The polyspec coordinator: runs the speculation loop between drafter and target services.

``coordinator.verify`` and ``coordinator.vocab`` hold the pure math (no grpc, asyncio or protobuf);
the rest drives the services and serves ``polyspec.v1.CoordinatorService``.
"""
