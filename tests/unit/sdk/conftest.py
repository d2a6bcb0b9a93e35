from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.sdk.scripted_coordinator import ScriptedServer


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.stop()
