"""The suite's clock: every test runs frozen at tests.clock.NOW, whatever the real date."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from server.clock import utcnow
from tests import clock


def test_every_test_starts_frozen_at_the_suites_instant(world):
    # The world was built at NOW too: its rows carry that instant, not the real one.
    assert utcnow() == datetime.now(UTC) == clock.NOW
    assert time.time() == clock.NOW.timestamp()
    assert world.sites["A"].created_at == clock.NOW


def test_the_clock_does_not_tick_during_a_test():
    first = utcnow()
    time.sleep(0.01)
    assert utcnow() == first


def test_the_instant_must_say_its_offset():
    with pytest.raises(ValueError, match="UTC offset"):
        clock._parse("2028-01-05T23:30:00")
    assert clock._parse("2028-01-05T23:30:00Z") == datetime(2028, 1, 5, 23, 30, tzinfo=UTC)
    assert clock._parse("2028-01-06T00:30:00+01:00") == datetime(2028, 1, 5, 23, 30, tzinfo=UTC)


def test_scenario_dates_move_with_the_instant_by_whole_days():
    assert clock.day("2026-12-01") == clock.today()
    assert clock.moment("2026-12-03T12:00").time().isoformat() == "12:00:00"
    assert (clock.moment("2026-12-03T12:00").date() - clock.day("2026-12-01")).days == 2
