"""Lab and imaging results as received; quarantined when they cannot be safely attached."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.clock import utcnow
from server.db import str_enum


class ResultKind(enum.StrEnum):
    CTDNA = "ctdna"
    IMAGING = "imaging"
    TUMOR_MARKER = "tumor_marker"


class CtdnaCall(enum.StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    INDETERMINATE = "indeterminate"
    INSUFFICIENT_SAMPLE = "insufficient_sample"


class Recist(enum.StrEnum):
    CR = "CR"
    PR = "PR"
    SD = "SD"
    PD = "PD"
    NE = "NE"


class ResultStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"


class LabResult(SQLModel, table=True):
    """One result: idempotent on (source, accession id)."""

    __tablename__ = "lab_result"
    __table_args__ = (
        sa.UniqueConstraint("source", "accession_id", name="uq_lab_result_accession"),
        sa.Index("ix_lab_result_participant", "participant_id", "kind", "collected_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: ResultKind = Field(sa_type=str_enum(ResultKind))
    source: str = Field(max_length=64)
    accession_id: str = Field(max_length=64)
    study_key: str | None = Field(default=None, max_length=32)
    study_code: str = Field(max_length=32)
    participant_id: int | None = Field(default=None, foreign_key="participant.id")
    site_id: int | None = Field(default=None, foreign_key="site.id")
    event_id: int | None = Field(default=None, foreign_key="schedule_event.id")
    status: ResultStatus = Field(default=ResultStatus.ACCEPTED, sa_type=str_enum(ResultStatus))
    quarantine_reason: str | None = Field(default=None, max_length=300)
    collected_at: datetime | None = Field(default=None)
    reported_at: datetime | None = Field(default=None)
    performed_on: date | None = Field(default=None)
    assay: str | None = Field(default=None, max_length=64)
    call: CtdnaCall | None = Field(default=None, sa_type=str_enum(CtdnaCall))
    mtm_per_ml: float | None = Field(default=None)
    modality: str | None = Field(default=None, max_length=32)
    recist: Recist | None = Field(default=None, sa_type=str_enum(Recist))
    is_confirmed: bool | None = Field(default=None)
    marker: str | None = Field(default=None, max_length=32)
    value: float | None = Field(default=None)
    unit: str | None = Field(default=None, max_length=16)
    # The payload as received (canonical JSON), to compare re-sent accessions and for audit.
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    payload_sha256: str = Field(max_length=64)
    received_at: datetime = Field(default_factory=utcnow)
    reviewed_by_user_id: int | None = Field(default=None, foreign_key="staff_user.id")
    reviewed_at: datetime | None = Field(default=None)


class PfsEvent(SQLModel, table=True):
    """A progression recorded from imaging (for PFS): the first one per participant counts."""

    __tablename__ = "pfs_event"

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", index=True)
    result_id: int = Field(foreign_key="lab_result.id", unique=True)
    progression_on: date
    days_from_anchor: int | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow)
