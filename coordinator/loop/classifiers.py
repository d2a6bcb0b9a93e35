"""DISCO's stop classifier: registered once per drafter replica, named by every Draft of a request using it.

Like TLI's token mask (``coordinator.loop.masks``): the artifact (``core.disco.artifact``, a few kilobytes)
is sent with SetStopClassifier the first time a replica drafts with it, then only named by id. A replica
that lost it answers the Draft with FAILED_PRECONDITION (reason ``UNKNOWN_STOP_CLASSIFIER``): it is
registered again and the Draft retried once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from coordinator.clients import CallScope, ModelServiceClient
from core.disco.artifact import StopArtifact
from core.errors import UnknownStopClassifierError
from core.modelcalls import DraftCall, DraftOutcome

log = structlog.get_logger(__name__)

# How a Draft goes out once the classifier is in place (plain, or through TLI's mask registry)
SendDraft = Callable[[ModelServiceClient, DraftCall, CallScope], Awaitable[DraftOutcome]]


class StopClassifierRegistry:
    """One stop classifier and the drafter replicas (by address) known to hold it."""

    def __init__(self, artifact: StopArtifact) -> None:
        self.classifier_id = artifact.classifier_id
        self._artifact = artifact
        self._registered: set[str] = set()

    def holds(self, address: str) -> bool:
        return address in self._registered

    async def register(self, client: ModelServiceClient, scope: CallScope) -> None:
        """Sends the classifier to one replica (idempotent on the server)."""
        artifact = self._artifact
        parameters = await client.set_stop_classifier(
            self.classifier_id, artifact.spec_json, artifact.weights, scope
        )
        self._registered.add(client.address)
        log.info(
            "stop_classifier_registered",
            replica=client.address,
            classifier_id=self.classifier_id,
            parameters=parameters,
        )

    async def draft(
        self, client: ModelServiceClient, call: DraftCall, scope: CallScope, send: SendDraft
    ) -> DraftOutcome:
        """A Draft naming the classifier, registering it first where needed and again if it was lost."""
        if not self.holds(client.address):
            await self.register(client, scope)
        try:
            return await send(client, call, scope)
        except UnknownStopClassifierError:
            self._registered.discard(client.address)
            log.info("stop_classifier_lost", replica=client.address, classifier_id=self.classifier_id)
            await self.register(client, scope)
            return await send(client, call, scope)
