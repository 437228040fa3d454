"""What the dispatcher tests share: outbox rows committed for real (`Live`), the fake Twilio and
the production provider pointed at it, a dispatcher wired to both, a crash, a virtual clock.

The fixtures built on these (`live`, `fake`) are in conftest.py."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from notifications import outbox
from notifications.dispatcher import Dispatcher
from notifications.fake_twilio import FakeTwilio
from notifications.models import (
    PRIORITY_REMINDER,
    MessageCategory,
    MessageLog,
    MessageStatus,
    OutboxMessage,
)
from notifications.providers import TwilioSmsProvider

DONE = (MessageStatus.SENT, MessageStatus.DELIVERED)
ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("STEPDOWN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Live:
    """Outbox rows committed on the app's engine, removed again after the test."""

    engine: Engine
    prefix: str = field(default_factory=lambda: f"reliability:{uuid.uuid4().hex[:10]}:")
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def session(self) -> Session:
        """What a dispatcher process would use: its own connection, real commits."""
        return Session(self.engine, expire_on_commit=False)

    def enqueue(
        self,
        count: int,
        *,
        now: datetime,
        label: str = "reminder",
        priority: int = PRIORITY_REMINDER,
        category: MessageCategory = MessageCategory.REMINDER,
        not_before: Callable[[int], datetime] | None = None,
        sender: str | None = None,
    ) -> list[int]:
        """Commit `count` due rows, each with its own number and body; their ids in order."""
        ids = []
        with self.session() as session:
            for i in range(count):
                row, created = outbox.enqueue(
                    session,
                    dedupe_key=f"{self.prefix}{label}:{i}",
                    category=category,
                    kind="test",
                    to=f"+1202{next(self._numbers):07d}",
                    locale="en",
                    body=f"Stepdown {label} {i:04d} [{self.prefix}]",
                    priority=priority,
                    now=now,
                    not_before_at=not_before(i) if not_before else now,
                    sender=sender,
                )
                assert created
                ids.append(row.id)
            session.commit()
        return ids  # type: ignore[return-value]

    def enqueue_many(self, count: int, *, now: datetime, label: str = "bulk") -> list[int]:
        """The same pending rows as `enqueue` writes (without its log entries), in one statement:
        thousands of rows in a fraction of a second."""
        rows = [
            {
                "dedupe_key": f"{self.prefix}{label}:{i}",
                "category": MessageCategory.REMINDER,
                "kind": "test",
                "to_e164": f"+1202{next(self._numbers):07d}",
                "locale": "en",
                "body": f"Stepdown {label} {i:04d} [{self.prefix}]",
                "segments": 1,
                "priority": PRIORITY_REMINDER,
                "intended_at": now,
                "not_before_at": now,
                "status": MessageStatus.PENDING,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(count)
        ]
        with self.session() as session:
            session.execute(sa.insert(OutboxMessage), rows)
            session.commit()
        return [r.id for r in self.rows()]  # type: ignore[misc]

    def rows(self) -> list[OutboxMessage]:
        with self.session() as session:
            return list(
                session.exec(
                    select(OutboxMessage)
                    .where(col(OutboxMessage.dedupe_key).startswith(self.prefix))
                    .order_by(col(OutboxMessage.id))
                )
            )

    def get(self, message_id: int) -> OutboxMessage:
        with self.session() as session:
            row = session.get(OutboxMessage, message_id)
            assert row is not None
            return row

    def log(self, message_id: int) -> list[MessageLog]:
        with self.session() as session:
            return list(
                session.exec(
                    select(MessageLog)
                    .where(MessageLog.message_id == message_id)
                    .order_by(col(MessageLog.id))
                )
            )

    def open_rows_elsewhere(self) -> int:
        with self.session() as session:
            return session.exec(
                select(sa.func.count())
                .select_from(OutboxMessage)
                .where(
                    col(OutboxMessage.status).in_(list(outbox.OPEN_STATUSES)),
                    ~col(OutboxMessage.dedupe_key).startswith(self.prefix),
                )
            ).one()

    def cleanup(self) -> None:
        mine = select(OutboxMessage.id).where(col(OutboxMessage.dedupe_key).startswith(self.prefix))
        with self.engine.begin() as conn:
            conn.execute(sa.delete(MessageLog).where(col(MessageLog.message_id).in_(mine)))
            conn.execute(
                sa.delete(OutboxMessage).where(
                    col(OutboxMessage.dedupe_key).startswith(self.prefix)
                )
            )


def start_fake(app: Flask, **kw: Any) -> FakeTwilio:
    kw.setdefault("callbacks_enabled", False)
    kw.setdefault("callback_delay", 0.01)
    return FakeTwilio(
        account_sid=app.config["TWILIO_ACCOUNT_SID"],
        auth_token=app.config["TWILIO_AUTH_TOKEN"],
        **kw,
    ).start()


def provider_for(app: Flask, fake: FakeTwilio, *, timeout: float = 5.0) -> TwilioSmsProvider:
    """The production provider class, pointed at the fake."""
    return TwilioSmsProvider(
        app.config["TWILIO_ACCOUNT_SID"],
        app.config["TWILIO_AUTH_TOKEN"],
        from_number=app.config["TWILIO_FROM_NUMBER"],
        base_url=fake.base_url,
        timeout=timeout,
    )


def dispatcher_for(app: Flask, live: Live, fake: FakeTwilio, **kw: Any) -> Dispatcher:
    params: dict[str, Any] = {
        "session_factory": live.session,
        "provider": provider_for(app, fake),
        "callback_base_url": app.config["PUBLIC_BASE_URL"],
        "rate_per_second": 0,  # a rate <= 0 means no limit
    }
    params.update(kw)
    return Dispatcher(**params)


def creations(fake: FakeTwilio) -> list[Any]:
    return [c for c in fake.api_calls() if c.operation == "create"]


class Crash(BaseException):
    """The process died here (kill -9 between Twilio's answer and our commit). A BaseException,
    like SystemExit: the dispatcher's per-message error handling must not be able to catch it,
    just as it cannot catch a kill."""


class VirtualTime:
    """A virtual clock for the send-rate store and the dispatcher's sleeps: sleeping moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def run_processes(script: str, cfg: dict[str, Any], *, count: int = 2) -> list[dict[str, Any]]:
    """Start `count` Python processes running `script`, hand each `cfg` (one JSON line), wait
    until every one prints "ready", then say "go" to all at once; the last JSON line each
    printed, in order. Every process is killed if anything goes wrong."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(count):
            proc = subprocess.Popen(
                [sys.executable, "-c", script],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            procs.append(proc)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cfg) + "\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@contextmanager
def redis_keyspace(url: str = REDIS_URL) -> Iterator[str]:
    """A key prefix of this test in the Redis at `url`, its keys deleted afterwards. Without
    Redis the test is skipped, except in CI (CI=true), where it fails."""
    import pytest
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {url} is unreachable; CI needs it: {exc}")
        pytest.skip(f"Redis at {url} is unreachable ({exc}); CI runs these tests")
    prefix = f"stepdown-test-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()
