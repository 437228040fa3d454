"""One send rate per sender (notifications/ratelimit.py): the GCRA rule, the urgent hold, the 429
pause, and each store (this process, PostgreSQL, Redis) keeping the spacing for callers that
share nothing but the store.

Redis at STEPDOWN_TEST_REDIS_URL (default 127.0.0.1:6379, database 0), under a key prefix of
this run, deleted afterwards; without Redis those tests are skipped, except in CI (CI=true),
where they fail."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from flask import Flask

from notifications.ratelimit import (
    HOLD_GRACE_SECONDS,
    DatabaseRate,
    FallbackRate,
    MemoryRate,
    RedisRate,
    SendRate,
    Slots,
    decide,
    interval,
    paused,
    rate_store,
)
from server.db import get_db, make_engine
from tests.notifications.harness import REDIS_URL, redis_keyspace

ON_POSTGRESQL = bool(os.environ.get("STEPDOWN_TEST_DATABASE_URL"))


# --- the rule ----------------------------------------------------------------------------------


def test_sends_are_spaced_by_the_interval_whoever_asks() -> None:
    state = Slots()
    state, wait = decide(state, 100.0, 0.5, urgent=False)
    assert wait == 0.0 and state.tat == 100.5
    state, wait = decide(state, 100.2, 0.5, urgent=False)
    assert wait == pytest.approx(0.3)  # refused: the next slot is at 100.5
    state, wait = decide(state, 100.5, 0.5, urgent=False)
    assert wait == 0.0 and state.tat == 101.0
    # After a quiet while the next send goes at once (no saved-up burst).
    state, wait = decide(state, 200.0, 0.5, urgent=False)
    assert wait == 0.0 and state.tat == 200.5
    state, wait = decide(state, 200.0, 0.5, urgent=False)
    assert wait == pytest.approx(0.5)


def test_an_urgent_caller_keeps_the_next_slot_from_routine_callers() -> None:
    state, _ = decide(Slots(), 10.0, 1.0, urgent=False)  # a reminder went at 10.0
    state, wait = decide(state, 10.4, 1.0, urgent=True)  # an alert arrives
    assert wait == pytest.approx(0.6)
    assert state.hold_until == pytest.approx(11.0 + HOLD_GRACE_SECONDS)
    # At 11.0 the slot is free, but a routine caller is refused: it is the alert's.
    routine, wait = decide(state, 11.0, 1.0, urgent=False)
    assert routine == state and wait == pytest.approx(HOLD_GRACE_SECONDS)
    state, wait = decide(state, 11.01, 1.0, urgent=True)
    assert wait == 0.0 and state == Slots(tat=12.01, hold_until=0.0)
    # An urgent caller that died: the hold lapses after its grace.
    state, _ = decide(Slots(tat=20.0), 19.5, 1.0, urgent=True)
    _, wait = decide(state, 20.0 + HOLD_GRACE_SECONDS + 0.01, 1.0, urgent=False)
    assert wait == 0.0


def test_slots_are_paced_under_the_configured_rate() -> None:
    # The provider counts arrivals: at exactly 1/rate, rate+1 sends span exactly one second and
    # any jitter shows the provider more than the rate; the slots keep a tenth in hand.
    assert interval(1) == pytest.approx(1 / 0.9)
    assert 6 * interval(6) == pytest.approx(1 / 0.9)
    assert interval(0) == 0.0 and interval(-1) == 0.0


def test_a_pause_holds_every_caller_urgent_or_not() -> None:
    state = paused(Slots(), 50.0, 30.0)
    assert decide(state, 60.0, 1.0, urgent=False)[1] == pytest.approx(20.0)
    assert decide(state, 60.0, 1.0, urgent=True)[1] == pytest.approx(20.0)
    assert decide(state, 80.0, 1.0, urgent=False)[1] == 0.0


# --- the stores --------------------------------------------------------------------------------


@pytest.fixture
def redis_store() -> Iterator[RedisRate]:
    with redis_keyspace(REDIS_URL) as prefix:
        yield RedisRate(REDIS_URL, prefix)


@pytest.fixture
def database_store(app: Flask) -> Iterator[DatabaseRate]:
    engine = get_db(app).engine
    if engine.dialect.name != "postgresql":
        pytest.skip("the sms_sender_rate store is PostgreSQL's; this runs in the PostgreSQL pass")
    sender = f"+1555{uuid.uuid4().int % 10**7:07d}"
    store = DatabaseRate(engine)
    store.test_sender = sender  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM sms_sender_rate WHERE sender = %s", (sender,))


def hammer(
    store: SendRate, sender: str, *, rate: float, callers: int, seconds: float
) -> list[float]:
    """`callers` threads take slots as fast as the store lets them; the grant times."""
    grants: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def caller() -> None:
        while time.monotonic() < end:
            wait = store.acquire(sender, rate, urgent=False)
            if wait > 0:
                time.sleep(min(wait, 0.05))
                continue
            with lock:
                grants.append(time.monotonic())

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(grants)


def assert_spaced(grants: list[float], rate: float, seconds: float) -> None:
    # The store's clock decides; these times are when the callers heard back, a few ms later.
    # A busy machine may delay one answer by most of an interval, so two grants can be heard
    # close together; never three: any three span well over one interval (twice the rate would
    # put three within one).
    spans = [c - a for a, c in zip(grants, grants[2:], strict=False)]
    assert min(spans) > 1.2 / rate, min(spans)
    # Never more than the rate; and the slots were really granted (a busy machine may leave a
    # caller asleep past a few of them).
    assert rate * seconds / 2 <= len(grants) <= rate * seconds + 1


def test_memory_store_spaces_threads_of_one_process() -> None:
    grants = hammer(MemoryRate(), "+15550000001", rate=20, callers=4, seconds=1.0)
    assert_spaced(grants, 20, 1.0)


def test_postgresql_store_spaces_callers_on_separate_connections(
    database_store: DatabaseRate, app: Flask
) -> None:
    sender = database_store.test_sender  # type: ignore[attr-defined]
    # Two engines, two connection pools: what two dispatcher processes share is the row.
    url = get_db(app).engine.url.render_as_string(hide_password=False)
    engine = make_engine(url)
    other = DatabaseRate(engine)
    grants: list[list[float]] = [[], []]
    threads = [
        threading.Thread(
            target=lambda i=i, s=store: grants[i].extend(
                hammer(s, sender, rate=10, callers=2, seconds=1.5)
            )
        )
        for i, store in enumerate((database_store, other))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        engine.dispose()
    assert all(grants), "both took slots"
    assert_spaced(sorted(grants[0] + grants[1]), 10, 1.5)


def test_redis_store_spaces_callers_and_pauses_every_one(redis_store: RedisRate) -> None:
    sender = "+15550000002"
    grants = hammer(redis_store, sender, rate=20, callers=4, seconds=1.0)
    assert_spaced(grants, 20, 1.0)
    redis_store.pause(sender, 0.6)
    assert redis_store.acquire(sender, 20, urgent=False) == pytest.approx(0.6, abs=0.05)
    time.sleep(0.65)
    # The urgent hold, in Lua as in Python.
    assert redis_store.acquire(sender, 2, urgent=False) == 0.0
    assert redis_store.acquire(sender, 2, urgent=True) > 0.4  # the next slot is held for it
    time.sleep(interval(2) + 0.03)
    assert redis_store.acquire(sender, 2, urgent=False) > 0  # free, but held: refused
    assert redis_store.acquire(sender, 2, urgent=True) == 0.0


def test_an_unreachable_redis_falls_back_to_this_process() -> None:
    store = FallbackRate(RedisRate("redis://127.0.0.1:9/0", "unreachable"))
    assert store.acquire("+15550000003", 1, urgent=False) == 0.0
    assert store.acquire("+15550000003", 1, urgent=False) > 0.9  # paced locally meanwhile


class Flaky:
    """A shared store that fails while `down`, counting the calls it was given."""

    name = "flaky"

    def __init__(self) -> None:
        self.down = True
        self.calls = 0
        self.inner = MemoryRate()

    def acquire(self, sender: str, rate: float, *, urgent: bool) -> float:
        self.calls += 1
        if self.down:
            raise TimeoutError("no answer")  # what a network cut looks like: a timeout each time
        return self.inner.acquire(sender, rate, urgent=urgent)

    def pause(self, sender: str, seconds: float) -> None:
        self.calls += 1
        if self.down:
            raise TimeoutError("no answer")


def test_a_store_that_times_out_is_left_alone_a_while_then_used_again() -> None:
    now = [0.0]
    shared = Flaky()
    store = FallbackRate(shared, MemoryRate(clock=lambda: now[0]), clock=lambda: now[0])
    assert store.acquire("+15550000004", 1, urgent=True) == 0.0
    assert shared.calls == 1
    # Meanwhile each send does not wait for the store's timeout again: this process paces them.
    now[0] = 5.0
    assert store.acquire("+15550000004", 1, urgent=True) == 0.0
    store.pause("+15550000004", 3.0)
    assert store.acquire("+15550000004", 1, urgent=True) == pytest.approx(3.0)
    assert shared.calls == 1
    # Once the store answers again, it decides (and its slots are shared again).
    shared.down = False
    now[0] = 10.5
    assert store.acquire("+15550000004", 1, urgent=True) == 0.0
    assert shared.calls == 2
    assert store.acquire("+15550000004", 1, urgent=False) > 0.9
    assert shared.calls == 3


def test_the_store_follows_the_configuration(app: Flask) -> None:
    engine = get_db(app).engine
    assert isinstance(rate_store(redis_url=REDIS_URL, engine=engine, prefix="p"), FallbackRate)
    store = rate_store(redis_url=None, engine=engine, prefix="p")
    expected = DatabaseRate if ON_POSTGRESQL else MemoryRate
    assert isinstance(store, expected)
