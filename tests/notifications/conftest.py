"""Fixtures of the dispatcher tests (the helpers they use are in harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from notifications.fake_twilio import FakeTwilio
from server.db import get_db
from tests.notifications.harness import Live, start_fake


@pytest.fixture
def live(app: Flask) -> Iterator[Live]:
    harness = Live(get_db(app).engine)
    # A dispatcher claims every due row in the table: rows some other test committed would be
    # sent too and spoil the counts below.
    assert harness.open_rows_elsewhere() == 0, "another test left open outbox rows committed"
    try:
        yield harness
    finally:
        harness.cleanup()


@pytest.fixture
def fake(app: Flask) -> Iterator[FakeTwilio]:
    server = start_fake(app)
    try:
        yield server
    finally:
        server.stop()
