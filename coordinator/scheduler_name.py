"""The scheduler names a request asks for and a response reports (standard library only: the settings
and the command line read them without loading torch)."""

from __future__ import annotations

import enum


class SchedulerName(enum.Enum):
    """How a request's rounds are scheduled: asked for (``AUTO``, ``SI``, ``DSI``) or run (``SI``, ``DSI``).

    ``SI``: one round at a time (draft, then verify on one target replica). ``DSI``: distributed
    speculative inference, verification fanned out over several target replicas while the drafter drafts
    on (``coordinator.dsi``). ``AUTO``: DSI where the measured costs say it pays, SI otherwise.
    """

    AUTO = "auto"
    SI = "si"
    DSI = "dsi"
