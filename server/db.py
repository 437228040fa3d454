"""Engine and session handling, plus column helpers shared by every model module.

One session per request (created lazily, committed or rolled back at the request boundary) and one
per job. Services only `flush()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, g
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from notifications.sqltypes import str_enum

__all__ = ["ID_MAX", "Database", "get_db", "get_session", "init_app", "make_engine", "str_enum"]

# Every id column is INTEGER: 32-bit signed on PostgreSQL (64 on SQLite). A larger id from a URL,
# a query or a body must be refused at the edge; PostgreSQL would fail the query ("integer out
# of range") and SQLite's driver cannot even bind a number beyond 64 bits.
ID_MAX = 2**31 - 1


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and real BEGIN/SAVEPOINT handling."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = sa.create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT (used by per-test transactions) and
    # starts transactions late; take control of BEGIN ourselves, as the SQLAlchemy docs advise.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front and waits for it (busy_timeout). A deferred
        # BEGIN that reads and then writes fails at once with "database is locked" when another
        # writer got there first, which concurrent requests (a lab's burst) hit at once.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Holds the engine and builds sessions; tests swap `bind` for a connection in a transaction."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.bind: Any = self.engine
        self.join_savepoint = False

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def session(self) -> Session:
        """A new session on the current bind."""
        if self.join_savepoint:
            return Session(
                bind=self.bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
        return Session(bind=self.bind, expire_on_commit=False)

    @contextmanager
    def job_session(self) -> Iterator[Session]:
        """A session for a job or CLI command: commit on success, roll back on error."""
        session = self.session()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def get_db(app: Flask | None = None) -> Database:
    """The app's Database."""
    return (app or current_app).extensions["stepdown_db"]  # type: ignore[no-any-return]


def get_session() -> Session:
    """The current request's session, created on first use."""
    if "db_session" not in g:
        g.db_session = get_db().session()
    return g.db_session  # type: ignore[no-any-return]


def init_app(app: Flask) -> None:
    """Attach a Database to the app and close sessions at the end of each request."""
    app.extensions["stepdown_db"] = Database(app.config["DATABASE_URL"])

    @app.teardown_appcontext
    def _close_session(exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is None:
            return
        try:
            if exc is not None:
                session.rollback()
        finally:
            session.close()
