"""SetStopClassifier and Draft with stop_classifier_id / return_features through the real gRPC stack."""

from __future__ import annotations

import grpc
from polyspec.v1 import model_pb2

from core.errors import ErrorReason
from core.serving.status import error_reason
from tests.integration.test_model_service_grpc import ctx, rpc_error, sampling
from tests.integration.test_model_service_token_masks import CONTEXT, StartServer, model_dir, start
from tests.unit.disco.helpers import artifact_of, token_prob_classifier

__all__ = ["model_dir", "start"]  # the token-mask tests' fixtures: a tiny llama served on loopback


def draft(sequence: str, classifier_id: str = "", *, features: bool = True) -> model_pb2.DraftRequest:
    return model_pb2.DraftRequest(
        context=ctx(sequence, CONTEXT),
        max_draft_tokens=8,
        sampling=sampling(0.0),
        stop_classifier_id=classifier_id,
        return_features=features,
    )


async def test_registered_classifier_stops_drafts_and_features_come_back(start: StartServer) -> None:
    served = await start()
    info = await served.stub.Info(model_pb2.InfoRequest())
    assert len(info.model_fingerprint) == 32
    unknown = await rpc_error(served.stub.Draft(draft("a", "c1")))
    assert unknown.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(unknown) is ErrorReason.UNKNOWN_STOP_CLASSIFIER  # what the coordinator reads
    artifact = artifact_of(token_prob_classifier(threshold=0.5))
    registered = await served.stub.SetStopClassifier(
        model_pb2.SetStopClassifierRequest(
            classifier_id="c1", spec_json=artifact.spec_json, weights=artifact.weights
        )
    )
    assert registered.parameters == 7
    free = await served.stub.Draft(draft("b"))
    assert len(free.features) == len(free.draft_tokens) == 8
    stopped = await served.stub.Draft(draft("c", "c1"))
    cut = next((j + 1 for j, f in enumerate(free.features) if f.values[0] < 0.5), 8)
    assert list(stopped.draft_tokens) == list(free.draft_tokens)[:cut]
    plain = await served.stub.Draft(draft("d", features=False))
    assert list(plain.features) == []


async def test_bad_classifier_requests_are_invalid_arguments_naming_the_field(start: StartServer) -> None:
    served = await start()
    artifact = artifact_of(token_prob_classifier())
    cases = [
        ("classifier_id", model_pb2.SetStopClassifierRequest(spec_json=artifact.spec_json)),
        (
            "weights",
            model_pb2.SetStopClassifierRequest(
                classifier_id="x", spec_json=artifact.spec_json, weights=b"not safetensors"
            ),
        ),
        ("spec_json", model_pb2.SetStopClassifierRequest(classifier_id="x", spec_json="{", weights=b"")),
    ]
    for field, request in cases:
        error = await rpc_error(served.stub.SetStopClassifier(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert (error.details() or "").startswith(f"{field}: "), error.details()
    bad_threshold = draft("e", "x")
    bad_threshold.stop_classifier_threshold = 1.5
    error = await rpc_error(served.stub.Draft(bad_threshold))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("stop_classifier_threshold: ")
