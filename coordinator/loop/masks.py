"""TLI's drafter token mask: registered once per drafter replica, named by every Draft.

The mask (the drafter ids in the vocabulary intersection, ``coordinator.pair.VocabAlignment``) is sent
with SetTokenMask the first time a replica drafts for TLI, then only named by id, so no round ships
O(vocab) bytes. A replica that lost it (restart, eviction, a new replica at the same address) answers
the Draft with an unknown-mask FAILED_PRECONDITION: the mask is registered again and the Draft retried
once. A context miss is a different error, handled by the client itself (it resends the context).
"""

from __future__ import annotations

from dataclasses import replace

import structlog

from coordinator.clients import CallScope, ModelServiceClient
from coordinator.metrics import CoordinatorMetrics
from core.errors import UnknownTokenMaskError
from core.modelcalls import DraftCall, DraftOutcome

log = structlog.get_logger(__name__)


class TokenMaskRegistry:
    """One mask and the drafter replicas (by address) known to hold it."""

    def __init__(self, mask_id: str, bitmap: bytes, metrics: CoordinatorMetrics) -> None:
        self.mask_id = mask_id
        self._bitmap = bitmap
        self._metrics = metrics
        self._registered: set[str] = set()

    def holds(self, address: str) -> bool:
        """Whether the replica at ``address`` is believed to hold the mask."""
        return address in self._registered

    async def register(self, client: ModelServiceClient, scope: CallScope) -> None:
        """Sends the mask to one replica (idempotent on the server)."""
        try:
            allowed_tokens = await client.set_token_mask(self.mask_id, self._bitmap, scope)
        except Exception:
            self._metrics.token_mask_registrations.labels(outcome="error").inc()
            raise
        self._metrics.token_mask_registrations.labels(outcome="ok").inc()
        self._registered.add(client.address)
        log.info(
            "token_mask_registered",
            replica=client.address,
            mask_id=self.mask_id,
            allowed_tokens=allowed_tokens,
        )

    async def draft(self, client: ModelServiceClient, call: DraftCall, scope: CallScope) -> DraftOutcome:
        """A Draft restricted to the mask, registering it first where needed and again if it was lost."""
        masked = replace(call, token_mask_id=self.mask_id)
        if not self.holds(client.address):
            await self.register(client, scope)
        try:
            return await client.draft(masked, scope)
        except UnknownTokenMaskError:
            self._registered.discard(client.address)
            log.info("token_mask_lost", replica=client.address, mask_id=self.mask_id)
            await self.register(client, scope)
            return await client.draft(masked, scope)
