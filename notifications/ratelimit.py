"""One send rate per sender, shared by every dispatcher on every machine.

A long code sends about one SMS a second; Twilio queues whatever it is given faster, first in
first out per sender, so a reminder handed over too early sits in front of a later staff alert.
Each dispatcher therefore asks for a *slot* before every provider call, and the slots of a sender
live where every dispatcher sees them:

- Redis when REDIS_URL is set (one Lua script, Redis's own clock);
- else the PostgreSQL table `sms_sender_rate` (one row per sender, locked for the few
  microseconds of the decision, PostgreSQL's clock);
- else this process's memory (SQLite: one machine, one scheduler process sending).

The rule is GCRA (a token bucket of one token, kept as a single "theoretical arrival time"): a
sender's sends are at least `interval(rate)` apart, whoever sends them. The clock is the store's
own, so the machines' clocks never matter.

The slots are paced at PACING (90 %) of the configured rate: the provider counts arrivals, not our
slots, and the time from a slot to the request reaching the provider varies (a busy machine, the
network). At exactly 1/rate, rate+1 sends span exactly one second, so any jitter lets the provider
see more than the rate in some second; at 90 % it takes a jitter of a tenth of a second per
interval's worth (100 ms at 1/s, 22 ms per send at 5/s: 111 ms across six) before it could.

Staff alerts keep their priority when they share a sender with participant messages: an urgent
caller that finds the next slot taken *holds* it — routine callers are refused until the urgent
caller has taken it (or a short grace has passed, should it have died meanwhile).

A 429 from the provider pauses the sender for every dispatcher (`pause`): Twilio never processed
the request, and N dispatchers each moving on to their next row would burn N rows' attempts.

Why not a library: the `limits` package behind Flask-Limiter counts fixed or moving windows (a
window's whole budget can go in one burst, twice across a window edge) and has no priority;
pyrate-limiter keeps one row per hit. Neither reserves a slot for an urgent caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger("stepdown.ratelimit")

# How long a slot stays reserved for the urgent caller that asked for it.
HOLD_GRACE_SECONDS = 0.25
# Slots go at this share of the configured rate (see above): the provider never sees more.
PACING = 0.9


def interval(rate: float) -> float:
    """Seconds between two slots of a sender sending `rate` SMS a second (0: no limit)."""
    return 1.0 / (rate * PACING) if rate > 0 else 0.0


@dataclass(frozen=True)
class Slots:
    """A sender's state: the next moment a send may start (`tat`) and until when the next slot
    is reserved for an urgent caller (`hold_until`); seconds on the store's clock."""

    tat: float = 0.0
    hold_until: float = 0.0


def decide(state: Slots, now: float, interval: float, *, urgent: bool) -> tuple[Slots, float]:
    """(new state, seconds to wait): 0.0 means the caller has the slot and may send now."""
    if state.tat <= now and (urgent or state.hold_until <= now):
        return Slots(tat=max(state.tat, now) + interval, hold_until=0.0), 0.0
    if urgent:
        # Keep the next slot for this caller; routine callers wait until it took it.
        hold = max(state.hold_until, max(state.tat, now) + HOLD_GRACE_SECONDS)
        return Slots(state.tat, hold), max(state.tat - now, 0.0)
    return state, max(state.tat, state.hold_until) - now


def paused(state: Slots, now: float, seconds: float) -> Slots:
    """The state after the provider asked for `seconds` of quiet (429 Retry-After)."""
    return Slots(tat=max(state.tat, now + seconds), hold_until=state.hold_until)


class SendRate(Protocol):
    """Where the slots of every sender are kept."""

    name: str

    def acquire(self, sender: str, rate: float, *, urgent: bool) -> float:
        """Take the sender's next slot (0.0), or say how many seconds until asking again.
        `rate` is sends per second; 0 or less means no limit."""
        ...

    def pause(self, sender: str, seconds: float) -> None:
        """No send from this sender, by anyone, for `seconds`."""
        ...


class MemoryRate:
    """Slots in this process only (SQLite runs one sending process)."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state: dict[str, Slots] = {}
        self._lock = threading.Lock()

    def acquire(self, sender: str, rate: float, *, urgent: bool) -> float:
        if rate <= 0:
            return 0.0
        with self._lock:
            state, wait = decide(
                self._state.get(sender, Slots()), self._clock(), interval(rate), urgent=urgent
            )
            self._state[sender] = state
            return wait

    def pause(self, sender: str, seconds: float) -> None:
        with self._lock:
            self._state[sender] = paused(self._state.get(sender, Slots()), self._clock(), seconds)


class DatabaseRate:
    """Slots in the `sms_sender_rate` table (PostgreSQL): the row is locked while one caller
    decides, and the time is the database server's."""

    name = "postgresql"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _locked(self, conn: Any, sender: str) -> tuple[Slots, float]:
        select = sa.text(
            "SELECT tat, hold_until, EXTRACT(EPOCH FROM clock_timestamp())::float8 "
            "FROM sms_sender_rate WHERE sender = :s FOR UPDATE"
        )
        row = conn.execute(select, {"s": sender}).first()
        if row is None:  # the sender's first send ever
            conn.execute(
                sa.text(
                    "INSERT INTO sms_sender_rate (sender, tat, hold_until) "
                    "VALUES (:s, 0, 0) ON CONFLICT (sender) DO NOTHING"
                ),
                {"s": sender},
            )
            row = conn.execute(select, {"s": sender}).one()
        return Slots(float(row[0]), float(row[1])), float(row[2])

    def _store(self, conn: Any, sender: str, state: Slots) -> None:
        conn.execute(
            sa.text("UPDATE sms_sender_rate SET tat = :t, hold_until = :h WHERE sender = :s"),
            {"t": state.tat, "h": state.hold_until, "s": sender},
        )

    def acquire(self, sender: str, rate: float, *, urgent: bool) -> float:
        if rate <= 0:
            return 0.0
        with self._engine.begin() as conn:
            state, now = self._locked(conn, sender)
            new, wait = decide(state, now, interval(rate), urgent=urgent)
            if new != state:
                self._store(conn, sender, new)
            return wait

    def pause(self, sender: str, seconds: float) -> None:
        with self._engine.begin() as conn:
            state, now = self._locked(conn, sender)
            self._store(conn, sender, paused(state, now, seconds))


# `decide` and `paused` in Lua, run atomically by Redis with its own clock (TIME).
_REDIS_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0')
local hold = tonumber(redis.call('HGET', KEYS[1], 'hold') or '0')
local interval = tonumber(ARGV[1])
local urgent = ARGV[2] == '1'
local grace = tonumber(ARGV[3])
local ttl = math.ceil((interval + grace + 60) * 1000)
if ARGV[4] ~= '' then
  tat = math.max(tat, now + tonumber(ARGV[4]))
  redis.call('HSET', KEYS[1], 'tat', tostring(tat))
  redis.call('PEXPIRE', KEYS[1], ttl + math.ceil(tonumber(ARGV[4]) * 1000))
  return '0'
end
if tat <= now and (urgent or hold <= now) then
  redis.call('HSET', KEYS[1], 'tat', tostring(math.max(tat, now) + interval), 'hold', '0')
  redis.call('PEXPIRE', KEYS[1], ttl)
  return '0'
end
if urgent then
  hold = math.max(hold, math.max(tat, now) + grace)
  redis.call('HSET', KEYS[1], 'hold', tostring(hold))
  redis.call('PEXPIRE', KEYS[1], ttl)
  return tostring(math.max(tat - now, 0))
end
return tostring(math.max(tat, hold) - now)
"""


class RedisRate:
    """Slots in Redis (REDIS_URL): one atomic script per call, Redis's clock."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "stepdown") -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        self._script = self._redis.register_script(_REDIS_ACQUIRE)
        self._prefix = prefix

    def _key(self, sender: str) -> str:
        return f"{self._prefix}:sms-rate:{sender}"

    def acquire(self, sender: str, rate: float, *, urgent: bool) -> float:
        if rate <= 0:
            return 0.0
        raw = self._script(
            keys=[self._key(sender)],
            args=[repr(interval(rate)), "1" if urgent else "0", repr(HOLD_GRACE_SECONDS), ""],
        )
        return float(raw)

    def pause(self, sender: str, seconds: float) -> None:
        self._script(keys=[self._key(sender)], args=["1", "1", "0", repr(max(seconds, 0.0))])


class FallbackRate:
    """A shared store, and this process's memory while the store cannot be reached: a Redis
    outage must not stop a nurse's alert (sends then keep the rate per process only). After a
    failure the store is left alone for `retry_after` seconds, so that a store that times out
    (a network cut, not a refusal) does not add its timeout to every send."""

    def __init__(
        self,
        shared: SendRate,
        local: SendRate | None = None,
        *,
        retry_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.local = local or MemoryRate()
        self.name = shared.name
        self.retry_after = retry_after
        self._clock = clock
        self._down_until = 0.0
        self._warned_at: float | None = None

    def _failed(self, exc: Exception) -> None:
        now = self._clock()
        self._down_until = now + self.retry_after
        if self._warned_at is None or now - self._warned_at > 60:
            self._warned_at = now
            log.warning(
                "send-rate store %s unreachable (%s): limiting in this process only",
                self.shared.name,
                type(exc).__name__,
            )

    def acquire(self, sender: str, rate: float, *, urgent: bool) -> float:
        if self._clock() >= self._down_until:
            try:
                return self.shared.acquire(sender, rate, urgent=urgent)
            except Exception as exc:  # any store failure: keep sending, paced in this process
                self._failed(exc)
        return self.local.acquire(sender, rate, urgent=urgent)

    def pause(self, sender: str, seconds: float) -> None:
        if self._clock() >= self._down_until:
            try:
                self.shared.pause(sender, seconds)
                return
            except Exception as exc:
                self._failed(exc)
        self.local.pause(sender, seconds)


def rate_store(*, redis_url: str | None, engine: Engine | None, prefix: str) -> SendRate:
    """Redis when configured, else the database when it is PostgreSQL, else this process."""
    if redis_url:
        return FallbackRate(RedisRate(redis_url, prefix))
    if engine is not None and engine.dialect.name == "postgresql":
        return DatabaseRate(engine)
    return MemoryRate()
