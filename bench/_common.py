"""Plumbing shared by the benchmarks: a scratch database, bulk loading, timers, SQL capture.

Nothing here is a product code path; the benchmarks measure the product's own queries and objects
and use these helpers only to get a large, realistic database quickly.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from notifications import outbox
from notifications.messages import MessageKind, render
from notifications.models import PRIORITY_REMINDER, MessageCategory, OutboxMessage
from server import migrate
from server.db import make_engine, normalise_url
from server.participants.models import Locale

Row = list[Any]


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks (dropping the scratch database) run."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)


@contextlib.contextmanager
def scratch_database(
    server_url: str | None,
    *,
    prefix: str = "stepdown_bench",
    sqlite_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """A freshly migrated database, removed afterwards even on error: a temporary SQLite file,
    or (given a PostgreSQL server URL) a new database `<prefix>_<random>` on that server.
    With `sqlite_dir`, the SQLite file is made there and left to the caller; `log` is told when
    the PostgreSQL database is created and dropped."""
    if server_url is None and sqlite_dir is not None:
        url = f"sqlite:///{sqlite_dir / 'bench.db'}"
        migrate.upgrade(url)
        yield url
        return
    if server_url is None:
        directory = Path(tempfile.mkdtemp(prefix=f"{prefix}_"))
        try:
            url = f"sqlite:///{directory / 'bench.db'}"
            migrate.upgrade(url)
            yield url
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    if not normalise_url(server_url).startswith("postgresql"):
        raise SystemExit("--database-url must name a PostgreSQL server (SQLite is the default)")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    if log:
        log(f"created database {name}")
    try:
        url = (
            sa.make_url(normalise_url(server_url))
            .set(database=name)
            .render_as_string(hide_password=False)
        )
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        if log:
            log(f"dropped database {name}")


# --- outbox rows ----------------------------------------------------------------------------


def enqueue_draw_reminder(
    session: Any,
    *,
    dedupe_key: str,
    to: str,
    code: str,
    when: datetime,
    tz: str,
    due_at: datetime,
    expires_at: datetime,
    now: datetime,
    ref: str,
    participant_id: int | None = None,
) -> OutboxMessage:
    """A participant's day-before blood-draw reminder in French (the real template), due at
    `due_at`, written with outbox.enqueue as the reminder job writes it."""
    row, _ = outbox.enqueue(
        session,
        dedupe_key=dedupe_key,
        category=MessageCategory.REMINDER,
        kind=MessageKind.REMINDER_BLOOD_DRAW.value,
        to=to,
        locale=Locale.FR.value,
        body=render(MessageKind.REMINDER_BLOOD_DRAW, Locale.FR.value, code=code, when=when, tz=tz),
        priority=PRIORITY_REMINDER,
        intended_at=due_at,
        not_before_at=due_at,
        expires_at=expires_at,
        participant_id=participant_id,
        ref=ref,
        now=now,
    )
    return row


# --- bulk loading ---------------------------------------------------------------------------


def row_processor(engine: Engine, table: sa.Table) -> Callable[[dict[str, Any]], Row]:
    """Turn a {column: value} dict into a row in column order, converted exactly as SQLAlchemy
    converts bound values for this engine (enums to strings, SQLite datetimes to text, ...).

    A column the dict leaves out gets its scalar default, else NULL if it may be NULL (so a
    column added to the model later does not break the benchmark); anything else is an error.
    """
    dialect = engine.dialect
    columns = list(table.columns)
    # The same (cached) processors the compiler uses for INSERT parameters.
    processors = [c.type._cached_bind_processor(dialect) for c in columns]
    names = [c.name for c in columns]
    fallback: dict[str, Any] = {}
    for c in columns:
        default = c.default
        if default is not None and default.is_scalar:
            fallback[c.name] = default.arg  # type: ignore[attr-defined]
        elif c.nullable:
            fallback[c.name] = None

    def process(values: dict[str, Any]) -> Row:
        unknown = values.keys() - set(names)
        missing = set(names) - values.keys() - fallback.keys()
        if unknown or missing:
            raise ValueError(f"{table.name}: missing {sorted(missing)}, unknown {sorted(unknown)}")
        out: Row = []
        for name, processor in zip(names, processors, strict=True):
            value = values[name] if name in values else fallback[name]
            out.append(processor(value) if processor is not None and value is not None else value)
        return out

    return process


def assert_unprocessed(engine: Engine, table: sa.Table, names: Sequence[str]) -> None:
    """Check that these columns' values go to the driver as they are (so raw values can be
    substituted into processed template rows)."""
    for name in names:
        if table.c[name].type._cached_bind_processor(engine.dialect) is not None:
            raise AssertionError(f"{table.name}.{name} needs conversion; cannot substitute it")


class BulkWriter:
    """Writes pre-converted rows: executemany in batches on SQLite, COPY on PostgreSQL.

    It uses its own connection (not the engine pool the benchmark measures with), so the loading
    pragmas below never touch a connection that is timed.
    """

    def __init__(self, url: str, *, batch_rows: int = 5000) -> None:
        self.engine = make_engine(url, poolclass=NullPool)
        self.is_postgresql = self.engine.dialect.name == "postgresql"
        self.batch_rows = batch_rows
        self._raw = self.engine.raw_connection()
        self._dbapi = cast(Any, self._raw.driver_connection)
        if not self.is_postgresql:
            # Loading only: durability of this connection's commits is irrelevant (a crash loses
            # a scratch database), and a large page cache keeps index inserts in memory.
            self._dbapi.execute("PRAGMA synchronous=OFF")
            self._dbapi.execute("PRAGMA cache_size=-1000000")

    def write(self, table: sa.Table, rows: Sequence[Row]) -> int:
        """Insert rows (every column, in table order) in one transaction; returns the count."""
        if not rows:
            return 0
        names = [c.name for c in table.columns]
        quoted = ", ".join(f'"{n}"' for n in names)
        if self.is_postgresql:
            copy_sql = f'COPY "{table.name}" ({quoted}) FROM STDIN'
            with self._dbapi.cursor() as cur, cur.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
            self._dbapi.commit()
            return len(rows)
        marks = ", ".join("?" for _ in names)
        sql = f'INSERT INTO "{table.name}" ({quoted}) VALUES ({marks})'
        cur = self._dbapi.cursor()
        # The engine's connect hook puts pysqlite in autocommit mode: BEGIN/COMMIT are ours.
        cur.execute("BEGIN")
        try:
            for start in range(0, len(rows), self.batch_rows):
                cur.executemany(sql, rows[start : start + self.batch_rows])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            cur.close()
        return len(rows)

    def after_explicit_ids(self, tables: Sequence[sa.Table]) -> None:
        """Move PostgreSQL id sequences past the ids written explicitly."""
        if not self.is_postgresql:
            return
        with self._dbapi.cursor() as cur:
            for table in tables:
                cur.execute(
                    "SELECT setval(pg_get_serial_sequence(%s, 'id'),"
                    f' (SELECT coalesce(max(id), 1) FROM "{table.name}"))',
                    (table.name,),
                )
        self._dbapi.commit()

    def analyze(self, tables: Sequence[sa.Table]) -> None:
        """PostgreSQL: refresh planner statistics, as autovacuum would after a bulk load.

        SQLite: nothing; the product never runs ANALYZE, so neither does the benchmark.
        """
        if not self.is_postgresql:
            return
        with self._dbapi.cursor() as cur:
            for table in tables:
                cur.execute(f'ANALYZE "{table.name}"')
        self._dbapi.commit()

    def close(self) -> None:
        self._raw.close()
        self.engine.dispose()


# --- measuring ------------------------------------------------------------------------------


def timings_ms(fn: Callable[[], float], *, repeat: int, warmup: int = 3) -> list[float]:
    """Run `fn` (which returns the seconds it measured) warmup + repeat times; the timed runs in
    milliseconds."""
    for _ in range(warmup):
        fn()
    return [fn() * 1000.0 for _ in range(repeat)]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[index]


@contextlib.contextmanager
def captured_sql(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every (statement, driver parameters) the engine sends while the block runs."""
    seen: list[tuple[str, Any]] = []

    def before(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


class Stopwatch:
    """Seconds since creation, for phase timings."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start
