"""The sign-in throttle: failed staff sign-ins remembered per (email, client) and per email, in
Redis when configured (shared by every worker) or in this process's memory.

The decisions are rules.sign_in_wait; this module only keeps the timestamps. Keys are keyed
hashes of the normalised email and the client, so unknown emails are counted exactly like real
ones (no existence oracle) and the store holds no email address. Time always comes from the
caller (`now`), never from the store, so a frozen clock in tests means the same on both stores.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from server.auth import rules
from server.errors import DomainError

log = logging.getLogger(__name__)

# More entries than any rule reads: the pair rule caps at 15 min after 15 failures, the account
# ceiling reads 100 an hour.
PAIR_CAP = 64
ACCOUNT_CAP = 2 * rules.ACCOUNT_CEILING
KNOWN_CLIENTS_CAP = 50


class SignInThrottled(DomainError):
    """Too many sign-in attempts for now: retry after `retry_after` seconds. Said the same way
    whether or not the email belongs to anyone."""

    status = 429
    code = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(f"too many sign-in attempts: try again {wait_words(self.retry_after)}")


def wait_words(seconds: int) -> str:
    """'in 12 seconds', 'in 3 minutes': how long to wait, in words."""
    if seconds < 120:
        return f"in {seconds} second{'s' if seconds != 1 else ''}"
    return f"in {math.ceil(seconds / 60)} minutes"


class Ledger(Protocol):
    """Sorted sets of timestamps (epoch seconds) by key, each member with its score."""

    def add(self, key: str, member: str, at: float, *, keep: float, cap: int) -> None: ...

    def scores(self, key: str, since: float) -> list[float]: ...

    def score(self, key: str, member: str) -> float | None: ...

    def clear(self, key: str) -> None: ...

    def reset(self) -> None: ...


class MemoryLedger:
    """This process's ledger: right for one process (development, tests, a fallback)."""

    SWEEP_EVERY = 1000

    def __init__(self) -> None:
        self._sets: dict[str, dict[str, float]] = {}
        self._keep: dict[str, float] = {}
        self._lock = threading.Lock()
        self._writes = 0

    def add(self, key: str, member: str, at: float, *, keep: float, cap: int) -> None:
        with self._lock:
            entries = self._sets.setdefault(key, {})
            entries[member] = at
            for old in [m for m, t in entries.items() if t <= at - keep]:
                del entries[old]
            if len(entries) > cap:
                for old in sorted(entries, key=entries.__getitem__)[: len(entries) - cap]:
                    del entries[old]
            self._keep[key] = keep
            self._writes += 1
            if self._writes % self.SWEEP_EVERY == 0:
                self._sweep(at)

    def _sweep(self, now: float) -> None:
        # Keys nobody touched for longer than they keep anything: a spray over many emails
        # would otherwise grow the dict for ever.
        for key in [
            k for k, v in self._sets.items() if max(v.values(), default=0) <= now - self._keep[k]
        ]:
            del self._sets[key]
            del self._keep[key]

    def scores(self, key: str, since: float) -> list[float]:
        with self._lock:
            return sorted(t for t in self._sets.get(key, {}).values() if t > since)

    def score(self, key: str, member: str) -> float | None:
        with self._lock:
            return self._sets.get(key, {}).get(member)

    def clear(self, key: str) -> None:
        with self._lock:
            self._sets.pop(key, None)
            self._keep.pop(key, None)

    def reset(self) -> None:
        with self._lock:
            self._sets.clear()
            self._keep.clear()


class RedisLedger:
    """The shared ledger: one Redis sorted set per key. Redis's own expiry only collects keys
    nobody has touched for longer than they keep anything; what counts is decided by the scores
    (our clock)."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        # Short timeouts: a Redis outage costs a sign-in a second, not a hung worker.
        self._redis: Any = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        self._prefix = prefix

    def add(self, key: str, member: str, at: float, *, keep: float, cap: int) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(key, {member: at})
        pipe.zremrangebyscore(key, "-inf", at - keep)
        pipe.zremrangebyrank(key, 0, -(cap + 1))
        pipe.expire(key, math.ceil(keep) + 60)
        pipe.execute()

    def scores(self, key: str, since: float) -> list[float]:
        rows = self._redis.zrangebyscore(key, f"({since}", "+inf", withscores=True)
        return sorted(float(score) for _, score in rows)

    def score(self, key: str, member: str) -> float | None:
        value = self._redis.zscore(key, member)
        return None if value is None else float(value)

    def clear(self, key: str) -> None:
        self._redis.delete(key)

    def reset(self) -> None:
        """Delete every key under this ledger's prefix (tests; never in production)."""
        for key in self._redis.scan_iter(match=f"{self._prefix}:*", count=500):
            self._redis.delete(key)


class SignInThrottle:
    """Staff sign-in attempts for each (email, client) pair and each email; see rules.sign_in_wait
    for what they decide."""

    RETRY_STORE_AFTER = 30.0  # seconds

    def __init__(self, ledger: Ledger, *, secret: str, prefix: str, enabled: bool = True) -> None:
        self.ledger = ledger
        self._down_until = 0.0
        self.enabled = enabled
        self._fallback = MemoryLedger()
        self._secret = secret.encode()
        self._prefix = prefix

    def _digest(self, *parts: str) -> str:
        text = "\x00".join(parts).encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, text, hashlib.sha256).hexdigest()[:32]

    def _keys(self, email: str, client: str) -> tuple[str, str, str, str]:
        account = self._digest("email", email.strip().lower())
        client_id = self._digest("client", client)
        return (
            f"{self._prefix}:signin:pair:{self._digest(account, client_id)}",
            f"{self._prefix}:signin:account:{account}",
            f"{self._prefix}:signin:known:{account}",
            client_id,
        )

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() >= self._down_until:
            try:
                return getattr(self.ledger, method)(*args, **kwargs)
            except Exception:
                # The store is down: count in this process meanwhile, never refuse because of
                # it, and leave it alone for a while (a sign-in makes up to five calls).
                log.warning("sign-in ledger unavailable; counting in memory", exc_info=True)
                self._down_until = time.monotonic() + self.RETRY_STORE_AFTER
        return getattr(self._fallback, method)(*args, **kwargs)

    def wait(self, *, email: str, client: str, now: datetime) -> timedelta:
        """How long this client must wait before trying this email again (zero: go ahead)."""
        if not self.enabled:
            return timedelta(0)
        pair, account, known, client_id = self._keys(email, client)
        t = now.timestamp()
        pair_times = self._call("scores", pair, t - rules.PAIR_MEMORY.total_seconds())
        account_times = self._call("scores", account, t - rules.ACCOUNT_WINDOW.total_seconds())
        seen = self._call("score", known, client_id)
        is_known = seen is not None and seen > t - rules.KNOWN_CLIENT_MEMORY.total_seconds()
        return rules.sign_in_wait(
            pair_failures=[_at(x) for x in pair_times],
            account_failures=[_at(x) for x in account_times],
            is_known_client=is_known,
            now=now,
        )

    def check(self, *, email: str, client: str, now: datetime) -> None:
        """Raise SignInThrottled (with the seconds to wait) if this attempt must wait."""
        wait = self.wait(email=email, client=client, now=now)
        if wait > timedelta(0):
            raise SignInThrottled(math.ceil(wait.total_seconds()))

    def record_failure(self, *, email: str, client: str, now: datetime) -> None:
        """Count a wrong password (or unknown email) for the pair and for the email."""
        if not self.enabled:
            return
        pair, account, _, _ = self._keys(email, client)
        t = now.timestamp()
        member = f"{t:.6f}:{secrets.token_hex(4)}"
        self._call("add", pair, member, t, keep=rules.PAIR_MEMORY.total_seconds(), cap=PAIR_CAP)
        self._call(
            "add",
            account,
            member,
            t,
            keep=rules.ACCOUNT_WINDOW.total_seconds(),
            cap=ACCOUNT_CAP,
        )

    def record_success(self, *, email: str, client: str, now: datetime) -> None:
        """The pair starts afresh and the client is known to this account from now on; the
        email's failures from everyone else still count."""
        if not self.enabled:
            return
        pair, _, known, client_id = self._keys(email, client)
        self._call("clear", pair)
        self._call(
            "add",
            known,
            client_id,
            now.timestamp(),
            keep=rules.KNOWN_CLIENT_MEMORY.total_seconds(),
            cap=KNOWN_CLIENTS_CAP,
        )

    def reset(self) -> None:
        """Forget everything (tests)."""
        self._down_until = 0.0
        self._call("reset")
        self._fallback.reset()


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
