"""Fixtures of the browser tests (the helpers they use are in harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from server.db import get_db
from tests import factories
from tests.browser.harness import chromium, serving
from tests.results.test_concurrency import fresh_app

__all__ = ["fresh_app"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def served(fresh_app: Any) -> Iterator[tuple[Any, str, dict[str, Any]]]:
    """The app on a real port with two sites' world, committed (the browser is another client)."""
    with fresh_app.app_context(), get_db(fresh_app).job_session() as s:
        world = factories.build_world(s)
        ids = {
            "A1": world.participants["A1"].id,
            "B1": world.participants["B1"].id,
            "site_a": world.sites["A"].id,
        }
    with serving(fresh_app) as base:
        yield fresh_app, base, ids
