"""Heartbeats of the background processes and the scheduler leader's lease."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.clock import utcnow
from server.db import str_enum


class ProcessRole(enum.StrEnum):
    SCHEDULER = "scheduler"
    DISPATCHER = "dispatcher"


class ProcessHeartbeat(SQLModel, table=True):
    """One row per started scheduler or dispatcher process, renewed while it lives.

    `beat` counts renewals: a standby judges a leader hung when its count stops moving, on its own
    monotonic clock, so clocks that disagree between machines never decide a takeover. The `*_at`
    columns use the one clock (server.clock), for readiness, the status page and the banner.
    """

    __tablename__ = "process_heartbeat"
    __table_args__ = (sa.Index("ix_process_heartbeat_role_beat", "role", "last_beat_at"),)

    # A random id per process start (a restarted process is a new row).
    id: str = Field(primary_key=True, max_length=40)
    role: ProcessRole = Field(sa_type=str_enum(ProcessRole))
    host: str = Field(max_length=255)
    pid: int
    # The PostgreSQL application_name of every connection this process opens: a standby that
    # fences a hung leader ends exactly these sessions.
    app_name: str = Field(max_length=63)
    is_leader: bool = Field(default=False)
    # The leader's lease epoch (scheduler leaders only).
    epoch: int | None = Field(default=None)
    beat: int = Field(default=0)
    started_at: datetime = Field(default_factory=utcnow)
    last_beat_at: datetime = Field(default_factory=utcnow)
    leader_since_at: datetime | None = Field(default=None)
    # Schedulers: when the leader last finished a job. Dispatchers: their last pass.
    last_tick_at: datetime | None = Field(default=None)
    # {job id: {"at", "ok", "seconds", "result" | "error"}} or the dispatcher's last pass.
    last_results: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    stopped_at: datetime | None = Field(default=None)


class LeaderLease(SQLModel, table=True):
    """Who leads the schedulers, and since which epoch. The epoch moves only at a takeover; every
    job transaction of a leader checks it (under FOR SHARE) before it commits, so a leader that
    lost the lease (hung, cut off) can no longer commit anything once its successor has begun."""

    __tablename__ = "leader_lease"

    name: str = Field(primary_key=True, max_length=40)
    epoch: int = Field(default=0)
    holder_id: str | None = Field(default=None, max_length=40)
    acquired_at: datetime | None = Field(default=None)
