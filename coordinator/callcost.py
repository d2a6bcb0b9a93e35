"""Per-call timeouts from the measured cost of the model services' forwards.

A fixed per-call timeout is wrong both ways: a minute lets a hung replica hold a request for a minute,
and a few seconds cut a legitimate prefill of a long prompt. ``CallCosts`` learns, per role, what a
call costs from the work the services report (``ForwardStats``: forwards, computed tokens, compute
seconds) as ``forwards * step + computed_tokens * token``, and gives each call a timeout of
``factor`` times its expected cost, times the calls queued ahead of it on the replica, within
``[floor, cap]``. Until it has measured a role, calls get the cap.

``step`` is a high quantile of the per-forward time of decode-like calls (few tokens per forward) and
``token`` a high quantile of the per-token time of prefill-like calls (many tokens per forward, the step
subtracted), so an estimate errs long; without a prefill sample yet ``token`` is a fraction of a step.
Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from core.modelcalls import ForwardStats

# Calls that compute at most this many tokens per forward measure the step; at least PREFILL, the token.
DECODE_TOKENS_PER_FORWARD = 8
PREFILL_TOKENS_PER_FORWARD = 32
# Without a prefill sample a token is priced at this fraction of a step (batched prefill is far cheaper
# per token than a decode step on every backend we run; the factor covers the rest).
UNMEASURED_TOKEN_FRACTION = 0.25
WINDOW = 64  # recent samples kept per kind
QUANTILE = 0.9


@dataclass(frozen=True)
class CallWork:
    """What a call asks of a service: its forwards and the tokens they compute (an upper bound)."""

    forwards: int
    tokens: int


@dataclass(frozen=True)
class TimeoutRule:
    """How a call's timeout follows its expected cost."""

    factor: float = 4.0  # timeout = factor x expected cost (x the calls queued ahead, + 1)
    floor: float = 2.0  # never shorter (network, scheduling, a first call's warm-up)
    cap: float = 60.0  # never longer; also the timeout before anything was measured


def _quantile(values: deque[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class CallCosts:
    """The measured cost of one role's calls, and the timeouts it implies."""

    def __init__(self, rule: TimeoutRule) -> None:
        self.rule = rule
        self._step: deque[float] = deque(maxlen=WINDOW)  # seconds per forward of decode-like calls
        self._token: deque[float] = deque(maxlen=WINDOW)  # seconds per token of prefill-like calls

    def observe(self, stats: ForwardStats) -> None:
        """Records one finished call's work (calls that computed nothing teach nothing)."""
        if stats.forwards <= 0 or stats.computed_tokens <= 0 or stats.compute_seconds < 0:
            return
        per_forward = stats.computed_tokens / stats.forwards
        if per_forward <= DECODE_TOKENS_PER_FORWARD:
            self._step.append(stats.compute_seconds / stats.forwards)
        elif per_forward >= PREFILL_TOKENS_PER_FORWARD:
            step = self.step_seconds() or 0.0
            spent = max(0.0, stats.compute_seconds - stats.forwards * step)
            self._token.append(spent / stats.computed_tokens)

    def step_seconds(self) -> float | None:
        """A high estimate of one decode forward (None: not measured yet)."""
        return _quantile(self._step, QUANTILE) if self._step else None

    def token_seconds(self) -> float | None:
        """A high estimate of one prefill token (None: no forward measured yet)."""
        if self._token:
            return _quantile(self._token, QUANTILE)
        step = self.step_seconds()
        return None if step is None else step * UNMEASURED_TOKEN_FRACTION

    def expected_seconds(self, work: CallWork) -> float | None:
        """The expected compute time of ``work`` (None: this role is not measured yet)."""
        step, token = self.step_seconds(), self.token_seconds()
        if step is None or token is None:
            return None
        return max(1, work.forwards) * step + max(0, work.tokens) * token

    def timeout(self, work: CallWork, queued_ahead: int = 0) -> float:
        """The timeout of a call doing ``work`` behind ``queued_ahead`` calls on the same replica."""
        expected = self.expected_seconds(work)
        if expected is None:
            return self.rule.cap
        bound = self.rule.factor * expected * (1 + max(0, queued_ahead))
        return min(self.rule.cap, max(self.rule.floor, bound))
