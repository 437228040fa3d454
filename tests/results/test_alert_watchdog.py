"""The alert watchdog pages the operators when a notified tier's SMS is still not with the SMS
provider 60 s after it was due (issue 13: a claimed SMS left "sending" by a killed process once
reached the provider 10 minutes late, and nothing noticed).

Due means its not-before time when it was never tried, else its first claim: retries after a
429 push the not-before time on, which alone would hide a message failing for minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from sqlmodel import Session, select

from notifications.models import MessageCategory, MessageStatus, OutboxMessage
from notifications.providers import RecordingProvider, TransientSendError
from server.alerts import service as alerts
from server.alerts.models import Alert, AlertKind
from server.auth.models import SiteMembership
from server.messaging import build_dispatcher
from tests import factories

T0 = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)


def at(moment: datetime) -> time_machine.travel:
    return time_machine.travel(moment, tick=False)


@pytest.fixture
def phones(world: factories.World, db: Session) -> dict[str, str]:
    """Site A staff with verified phones; the nurse is on call."""
    numbers = {"nurse": "+33610000001", "coordinator": "+33610000002", "admin": "+33610000004"}
    numbers["investigator"] = "+33610000003"
    for role, phone in numbers.items():
        user = world.staff[(role, "A")]
        user.phone_e164, user.is_phone_verified = phone, True
        db.add(user)
    nurse = world.staff[("nurse", "A")]
    membership = db.exec(select(SiteMembership).where(SiteMembership.user_id == nurse.id)).one()
    membership.is_on_call = True
    db.add(membership)
    db.commit()
    return numbers


def open_positive(world: factories.World, db: Session) -> Alert:
    alert, created = alerts.open_alert(
        session=db,
        kind=AlertKind.CTDNA_POSITIVE,
        trigger_key="test:watchdog:unsent",
        participant=world.participants["A1"],
        site_id=world.participants["A1"].site_id,
        summary="ctDNA positive",
        now=datetime.now(UTC),
    )
    assert created
    db.commit()
    return alert


def operator_pages(db: Session) -> list[Alert]:
    db.expire_all()
    return list(db.exec(select(Alert).where(Alert.kind == AlertKind.OPERATOR)).all())


def test_an_alert_sms_never_handed_over_pages_the_operators_after_60_s(
    world: factories.World, db: Session, phones: dict[str, str]
) -> None:
    with at(T0):
        alert = open_positive(world, db)
    with at(T0 + timedelta(seconds=60)):
        assert alerts.watchdog(session=db, now=datetime.now(UTC)) == {
            "stalled": 0,
            "unsent_sms": 0,
        }
    assert operator_pages(db) == []
    with at(T0 + timedelta(seconds=61)):
        assert alerts.watchdog(session=db, now=datetime.now(UTC))["unsent_sms"] == 1
    [page] = operator_pages(db)
    assert page.trigger_key == f"watchdog:unsent:{alert.id}:1:0"
    assert page.site_id == alert.site_id
    sms = db.exec(select(OutboxMessage).where(OutboxMessage.ref == f"alert:{page.id}")).all()
    assert [m.to_e164 for m in sms] == [phones["admin"]]
    # Still unsent a minute later: the same page, not a second one; and the operators' own
    # SMS, unsent too, does not page about itself.
    with at(T0 + timedelta(seconds=200)):
        assert alerts.watchdog(session=db, now=datetime.now(UTC))["unsent_sms"] == 1
    assert len(operator_pages(db)) == 1


def test_an_alert_sms_the_provider_keeps_refusing_counts_from_its_first_claim(
    app: Flask, world: factories.World, db: Session, phones: dict[str, str]
) -> None:
    provider = RecordingProvider()
    throttled = TransientSendError(
        "rate limited", may_have_been_accepted=False, http_status=429, retry_after=300
    )
    with at(T0):
        alert = open_positive(world, db)
        provider.fail_next(throttled)
        build_dispatcher(app, provider=provider, rate_per_second=0).run_once()
    db.expire_all()
    [message] = db.exec(select(OutboxMessage).where(OutboxMessage.ref == f"alert:{alert.id}"))
    # Back in the queue, its not-before time 5 minutes on (Retry-After).
    assert message.status == MessageStatus.PENDING and message.attempts == 1
    assert message.not_before_at.replace(tzinfo=UTC) >= T0 + timedelta(seconds=300)
    with at(T0 + timedelta(seconds=59)):
        assert alerts.watchdog(session=db, now=datetime.now(UTC))["unsent_sms"] == 0
    with at(T0 + timedelta(seconds=61)):
        assert alerts.watchdog(session=db, now=datetime.now(UTC))["unsent_sms"] == 1
    assert [p.trigger_key for p in operator_pages(db)] == [f"watchdog:unsent:{alert.id}:1:0"]


def test_a_sent_alert_sms_pages_nobody(
    app: Flask, world: factories.World, db: Session, phones: dict[str, str]
) -> None:
    with at(T0):
        alert = open_positive(world, db)
        stats = build_dispatcher(app, provider=RecordingProvider(), rate_per_second=0).run_once()
        assert stats.sent == 1
    with at(T0 + timedelta(minutes=10)):
        assert alerts.watchdog(session=db, now=datetime.now(UTC))["unsent_sms"] == 0
    assert operator_pages(db) == []
    assert db.exec(
        select(OutboxMessage).where(
            OutboxMessage.ref == f"alert:{alert.id}",
            OutboxMessage.category == MessageCategory.STAFF_ALERT,
        )
    ).one().status in (MessageStatus.SENT, MessageStatus.DELIVERED)
