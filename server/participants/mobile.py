"""The companion app's identity: one-time activation codes sent by SMS, then a revocable bearer
token scoped to that participant alone. Only hashes are stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from notifications import outbox
from notifications.messages import MessageKind, compose
from notifications.models import PRIORITY_PARTICIPANT, MessageCategory, OutboxMessage
from server import audit
from server.clock import utcnow
from server.errors import Conflict, DomainError
from server.participants.models import Participant

CODE_MINUTES = 30
TOKEN_DAYS = 180
MAX_FAILURES = 5


class ActivationCode(SQLModel, table=True):
    """A one-time code (hashed) that lets a phone become the participant's app."""

    __tablename__ = "activation_code"

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", index=True)
    code_hash: str = Field(max_length=64)
    expires_at: datetime
    used_at: datetime | None = Field(default=None)
    failed_attempts: int = Field(default=0)
    created_at: datetime = Field(default_factory=utcnow)


class ParticipantToken(SQLModel, table=True):
    """The app's bearer token (hashed); it reaches this participant's own data only."""

    __tablename__ = "participant_token"
    __table_args__ = (sa.UniqueConstraint("token_hash", name="uq_participant_token"),)

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", index=True)
    token_hash: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: datetime | None = Field(default=None)


class ActivationFailed(DomainError):
    """Wrong, used or expired code; the message does not say which."""

    status = 401
    code = "unauthorized"


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def quiet_hours_until(participant: Participant, now: datetime) -> datetime | None:
    """When the participant's quiet hours end, if `now` falls in them (else None)."""
    from zoneinfo import ZoneInfo

    from server.schedules.rules import defer_out_of_quiet_hours

    resume = defer_out_of_quiet_hours(
        now,
        ZoneInfo(participant.timezone),
        participant.quiet_hours_start,
        participant.quiet_hours_end,
    )
    return resume if resume > now else None


def send_activation_code(
    *, session: Session, participant: Participant, now: datetime, actor: str
) -> OutboxMessage:
    """Issue a new 6-digit code (earlier ones stop working) and queue it by SMS; the message.

    Refused during the participant's quiet hours: the SMS would wait for their morning and the
    code (valid CODE_MINUTES) would be dead on arrival, while staff were told it was sent."""
    if not (participant.has_sms_consent and participant.phone_e164):
        raise Conflict("the participant has no phone number with SMS consent")
    resume = quiet_hours_until(participant, now)
    if resume is not None:
        from zoneinfo import ZoneInfo

        local = resume.astimezone(ZoneInfo(participant.timezone))
        raise Conflict(
            "it is the participant's quiet hours "
            f"({participant.quiet_hours_start:%H:%M}-{participant.quiet_hours_end:%H:%M} "
            f"{participant.timezone}): no SMS goes out before {local:%H:%M} their time, and a "
            f"code lives {CODE_MINUTES} minutes; send it then"
        )
    for old in session.exec(
        select(ActivationCode).where(
            ActivationCode.participant_id == participant.id, col(ActivationCode.used_at).is_(None)
        )
    ):
        old.used_at = now  # superseded
        session.add(old)
    code = f"{secrets.randbelow(900000) + 100000}"
    row = ActivationCode(
        participant_id=participant.id,  # type: ignore[arg-type]
        code_hash=_hash(code),
        expires_at=now + timedelta(minutes=CODE_MINUTES),
        created_at=now,
    )
    session.add(row)
    session.flush()
    message, _ = outbox.enqueue(
        session,
        dedupe_key=f"activation:{row.id}",
        category=MessageCategory.ACTIVATION,
        kind=MessageKind.ACTIVATION_CODE.value,
        to=participant.phone_e164,
        locale=participant.locale.value,
        # Staff see this message as "… [code hidden] …"; the outbox forgets the code once sent.
        body=compose(
            MessageKind.ACTIVATION_CODE,
            participant.locale.value,
            code=participant.study_code,
            activation_code=code,
            minutes_valid=CODE_MINUTES,
        ),
        priority=PRIORITY_PARTICIPANT,
        participant_id=participant.id,
        expires_at=row.expires_at,
        now=now,
    )
    audit.record(
        session=session,
        actor=actor,
        action="participant.activation_code",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
        after={"expires_at": row.expires_at},
    )
    return message


def activate(
    *, session: Session, study_key: str | None, study_code: str, code: str, now: datetime
) -> tuple[str, ParticipantToken, Participant]:
    """Exchange a valid code for a token; five wrong tries burn the code."""
    from server.protocols.models import Study

    q = select(Participant).where(Participant.study_code == study_code)
    if study_key:
        q = q.join(Study, col(Study.id) == col(Participant.study_id)).where(Study.key == study_key)
    participants = session.exec(q).all()
    refused = ActivationFailed(
        "the code is wrong, used or expired: ask your care team for a new one"
    )
    if len(participants) != 1:
        raise refused
    participant = participants[0]
    row = session.exec(
        select(ActivationCode)
        .where(
            ActivationCode.participant_id == participant.id,
            col(ActivationCode.used_at).is_(None),
            col(ActivationCode.expires_at) > now,
        )
        .order_by(col(ActivationCode.id).desc())
    ).first()
    if row is None:
        raise refused
    if not secrets.compare_digest(row.code_hash, _hash(code.strip())):
        row.failed_attempts += 1
        if row.failed_attempts >= MAX_FAILURES:
            row.used_at = now
        session.add(row)
        session.commit()  # the failure counts even though the call fails
        raise refused
    row.used_at = now
    session.add(row)
    clear = secrets.token_urlsafe(32)
    token = ParticipantToken(
        participant_id=participant.id,  # type: ignore[arg-type]
        token_hash=_hash(clear),
        created_at=now,
        expires_at=now + timedelta(days=TOKEN_DAYS),
    )
    session.add(token)
    session.flush()
    audit.record(
        session=session,
        actor=f"participant:{participant.id}",
        action="participant.app_activated",
        entity="participant",
        entity_id=participant.id,
        site_id=participant.site_id,
        now=now,
    )
    return clear, token, participant


def participant_for_token(
    *, session: Session, token: str, now: datetime
) -> tuple[Participant, ParticipantToken] | None:
    """The participant behind a valid app token."""
    row = session.exec(
        select(ParticipantToken).where(ParticipantToken.token_hash == _hash(token))
    ).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    participant = session.get(Participant, row.participant_id)
    if participant is None:
        return None
    return participant, row


def is_participant_token(*, session: Session, token: str) -> bool:
    """Whether a bearer token is an app token (staff endpoints answer 404 to those)."""
    return (
        session.exec(
            select(ParticipantToken.id).where(ParticipantToken.token_hash == _hash(token))
        ).first()
        is not None
    )
