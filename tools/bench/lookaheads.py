"""The bench's lookahead specs: the SDK's (``auto``, ``K``, ``static:K``, ``confidence:K:T``, ``disco[:K]``)
and ``auto+disco``.

Each spec names what a request carries and which coordinator runs it. ``disco`` / ``disco:K`` (the
request's lookahead policy ``disco``: up to K draft tokens, the drafter stopping where the pair's trained
classifier says so) and ``auto+disco`` (the request's policy ``auto``) run on a coordinator started with
``--disco-artifact``, where ``auto`` takes the classifier as its stop; every other spec, plain ``auto``
included, runs on a coordinator without it. So ``auto`` and ``auto+disco`` measure the same policy with
and without the classifier in one run. Standard library and the SDK only (``polyspec --help`` stays light).
"""

from __future__ import annotations

from dataclasses import dataclass

DISCO_SUFFIX = "+disco"


@dataclass(frozen=True)
class BenchLookahead:
    """A bench lookahead spec: its label, what the request carries, and whether it needs the classifier."""

    spec: str
    """As given: the configuration's label (``auto+disco``, ``disco:4``)."""
    request: str
    """The lookahead of the request (``auto`` for ``auto+disco``)."""
    classifier: bool
    """Runs on the coordinator started with the trained stop classifier (``--disco-artifact``)."""


def parse_bench_lookahead(text: str) -> BenchLookahead:
    """The spec ``text``; ``ValueError`` says what is wrong with it."""
    from polyspec import InvalidArgumentError, parse_lookahead

    with_classifier = text.endswith(DISCO_SUFFIX)
    request = text.removesuffix(DISCO_SUFFIX) if with_classifier else text
    try:
        lookahead = parse_lookahead(request)
    except InvalidArgumentError as exc:
        raise ValueError(exc.message) from None
    if with_classifier and lookahead.policy != "auto":
        raise ValueError(
            f"lookahead {text!r}: {DISCO_SUFFIX} applies to auto (auto with the trained classifier as its "
            f"stop), not {lookahead.policy}; disco[:K] is the classifier's own policy"
        )
    return BenchLookahead(text, request, with_classifier or lookahead.policy == "disco")


def classifier_specs(specs: tuple[str, ...]) -> list[str]:
    """The specs of ``specs`` that run on the coordinator with the trained stop classifier (an invalid
    spec is left to its own error)."""
    found = []
    for spec in specs:
        try:
            if parse_bench_lookahead(spec).classifier:
                found.append(spec)
        except ValueError:
            continue
    return found


def missing_artifact_error(specs: tuple[str, ...]) -> str | None:
    """Why ``specs`` cannot run without ``--disco-artifact`` (None when none of them needs it)."""
    disco = classifier_specs(specs)
    if not disco:
        return None
    return (
        f"--lookahead {','.join(disco)} runs the pair's trained stop classifier: give its folder (from "
        "`polyspec disco train`) with --disco-artifact PATH"
    )
