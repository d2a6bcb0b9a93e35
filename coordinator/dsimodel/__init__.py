"""Models of DSI's speed (Timor et al., ICLR 2025; ALGORITHMS.md §5): pure Python, stdlib only.

Units: a target forward takes 1, a drafter forward ``c``; draft tokens are accepted i.i.d. with
probability ``a``. One module serves the DSI scheduler's policy, the tests, ``polyspec simulate`` and the
benchmark's predictions.

- ``offline``: the paper's model (enough servers) as exact long-run expectations: time per output token
  of target-only decoding (non-SI), SI and DSI at lookahead ``k``; the servers DSI needs.
- ``events``: an event model of a DSI scheduler over ``SP`` servers (Monte-Carlo with an explicit seed)
  with the knobs a scheduler chooses (``SchedulerKnobs``: block size, depth, plain target steps).
- ``policy``: ``choose_schedule(c, a, SP)``: the fastest knobs under the event model, and whether DSI,
  SI or target-only decoding should run.
"""

from coordinator.dsimodel.events import EventResult, EventSetting, SchedulerKnobs, simulate_events
from coordinator.dsimodel.offline import OfflinePoint, best_offline_point, offline_point, servers_required
from coordinator.dsimodel.policy import ScheduleChoice, SearchBudget, best_si, choose_schedule

__all__ = [
    "EventResult",
    "EventSetting",
    "OfflinePoint",
    "ScheduleChoice",
    "SchedulerKnobs",
    "SearchBudget",
    "best_offline_point",
    "best_si",
    "choose_schedule",
    "offline_point",
    "servers_required",
    "simulate_events",
]
