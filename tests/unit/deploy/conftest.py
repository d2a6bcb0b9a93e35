"""Fixtures of the deploy tests: the pinned helm binary."""

from __future__ import annotations

import pytest

from tests.unit.deploy.chart import Helm, fetch_helm


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(fetch_helm())
