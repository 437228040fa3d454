"""Sites and participants."""

from __future__ import annotations

import enum
from datetime import date, datetime, time
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.clock import utcnow
from server.db import str_enum


class ParticipantStatus(enum.StrEnum):
    SCREENING = "screening"
    ACTIVE = "active"
    OFF_TREATMENT_MONITORING = "off_treatment_monitoring"
    RESUMED_TREATMENT = "resumed_treatment"
    # Failed the protocol's entry gate (e.g. HEROES: Signatera-positive at baseline): stays on
    # maintenance therapy and leaves the trial's follow-up; nothing more is planned or sent.
    CONTINUES_MAINTENANCE = "continues_maintenance"
    COMPLETED = "completed"
    WITHDRAWN = "withdrawn"


class Locale(enum.StrEnum):
    EN = "en"
    FR = "fr"
    ZH = "zh"


class Site(SQLModel, table=True):
    """A hospital or clinic taking part in one or more studies."""

    __tablename__ = "site"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=200)
    # ISO 3166 region used to read national-format phone numbers entered at this site.
    country: str = Field(max_length=2)
    timezone: str = Field(max_length=64)
    is_active: bool = Field(default=True)
    # The site's escalation policy; None means the default (server/alerts/rules.py).
    escalation_policy: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    # The fail-safe (Joint Commission NPSG 2C): whom an alert reaches when every tier went
    # unanswered. A role (its staff at the site with a verified phone) and/or a number (a
    # switchboard, a duty phone). A site without one cannot enrol.
    failsafe_role: str | None = Field(default=None, max_length=16)
    failsafe_phone_e164: str | None = Field(default=None, max_length=20)
    created_at: datetime = Field(default_factory=utcnow)


class Participant(SQLModel, table=True):
    """A pseudonymous trial participant: a study code, never a name."""

    __tablename__ = "participant"
    __table_args__ = (
        sa.UniqueConstraint("study_id", "study_code", name="uq_participant_study_code"),
        sa.Index("ix_participant_site_status", "site_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="study.id", index=True)
    site_id: int = Field(foreign_key="site.id")
    study_code: str = Field(max_length=32)
    cohort: str | None = Field(default=None, max_length=32)
    anchor_date: date | None = Field(default=None)
    # The protocol version this participant's future events follow (amendments move it).
    protocol_version: str | None = Field(default=None, max_length=32)
    status: ParticipantStatus = Field(
        default=ParticipantStatus.SCREENING, sa_type=str_enum(ParticipantStatus)
    )
    timezone: str = Field(max_length=64)
    locale: Locale = Field(default=Locale.EN, sa_type=str_enum(Locale))
    phone_e164: str | None = Field(default=None, max_length=20, index=True)
    has_sms_consent: bool = Field(default=False)
    # No SMS between these local times (wrapping midnight); reminders wait for quiet_hours_end.
    quiet_hours_start: time = Field(default=time(21, 0))
    quiet_hours_end: time = Field(default=time(8, 0))
    sms_consent_changed_at: datetime | None = Field(default=None)
    withdrawn_at: datetime | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class EligibilityFact(SQLModel, table=True):
    """One fact of a participant's entry gate (or the confirmed stop date), recorded once with
    where it came from: a result, an event's completion, or a person's attestation (who, and
    the date it held). A correction is the investigator's override, in the audit trail."""

    __tablename__ = "eligibility_fact"
    __table_args__ = (
        sa.UniqueConstraint("participant_id", "fact_key", name="uq_eligibility_fact_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", ondelete="CASCADE")
    fact_key: str = Field(max_length=48)
    value: str = Field(max_length=64)
    # result | event | attestation (see server.protocols.definition.GateProvenance)
    provenance: str = Field(max_length=16)
    result_id: int | None = Field(default=None, foreign_key="lab_result.id")
    event_id: int | None = Field(default=None, foreign_key="schedule_event.id")
    # The day the fact held: the sample's or scan's day, or the date a person attests.
    observed_on: date | None = Field(default=None)
    attested_by_user_id: int | None = Field(default=None, foreign_key="staff_user.id")
    note: str | None = Field(default=None, max_length=500)
    recorded_at: datetime = Field(default_factory=utcnow)
