"""Issue 11, item 3: an "ACK <code>" SMS counts only from a phone the alert's code was sent to
(an SMS of that alert, alone or in a bundle, taken by the provider), for a role that may
acknowledge. Anything else changes nothing, is recorded without the code, and gets the answer an
unknown code gets; those answers are capped per phone. Codes are six digits from a keyed
permutation of the alert id.

Everything goes through the signed Twilio webhook, and the alert SMS through one dispatcher pass
against a recording provider (tests.results.test_results_alerts.send_staff_sms)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select

from notifications.messages import MessageKind, render
from notifications.models import MessageCategory, MessageStatus, OutboxMessage
from notifications.providers import RecordingProvider
from server.alerts import rules
from server.alerts import service as alerts
from server.alerts.models import Alert, AlertLog, AlertState
from server.audit import AuditEvent
from server.auth.models import Role
from tests.notifications.test_webhooks import post_signed
from tests.results.test_ack_and_delivery import _inbound
from tests.results.test_results_alerts import (
    T0,
    at,
    care_team,
    ctdna,
    post_negative_baseline,
    send_staff_sms,
)

__all__ = ["care_team"]  # the fixture, imported for use here

UNKNOWN_CODE_REPLY = render(MessageKind.ACK_CODE_UNKNOWN, "en")
_sids = iter(range(1, 10_000))


def _open_alert(api_as) -> int:
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        r = lab.post("/api/v1/results/ctdna", json=ctdna())
        assert r.status_code == 201, r.get_json()
        return r.get_json()["alert_id"]


def _reply(app, client, phone: str, body: str, sid: str | None = None) -> None:
    sid = sid or f"SMin{next(_sids):030d}"
    assert (
        post_signed(app, client, "/twilio/inbound", _inbound(phone, body, sid)).status_code == 200
    )


def _state(db, alert_id: int) -> AlertState:
    db.expire_all()
    return db.get(Alert, alert_id).state


def _answers_to(db, phone: str) -> list[OutboxMessage]:
    db.expire_all()
    return list(
        db.exec(
            select(OutboxMessage)
            .where(OutboxMessage.to_e164 == phone, OutboxMessage.category != "staff_alert")
            .order_by(col(OutboxMessage.id))
        ).all()
    )


def _refusals(db) -> list[AuditEvent]:
    db.expire_all()
    return list(
        db.exec(
            select(AuditEvent)
            .where(AuditEvent.action == "alert.sms_ack_refused")
            .order_by(col(AuditEvent.id))
        ).all()
    )


def test_coordinator_and_investigator_with_the_nurses_code_change_nothing(
    app, client, db, world, api_as, care_team
):
    alert_id = _open_alert(api_as)
    code = db.get(Alert, alert_id).ack_code
    with at(T0 + timedelta(minutes=1)):
        received = send_staff_sms(app)
    assert [(s.to, f"ACK {code}" in s.body) for s in received] == [(care_team["nurse"], True)]
    with at(T0 + timedelta(minutes=3)):
        _reply(app, client, care_team["coordinator"], f"ACK {code}")
        _reply(app, client, care_team["investigator"], f"ack{code}")
        # The same answer as a code nobody has: the reply does not tell that the alert exists.
        _reply(app, client, care_team["admin"], "ACK 999999" if code != "999999" else "ACK 999998")
    assert _state(db, alert_id) == AlertState.OPEN
    answers = {
        role: [(m.kind, m.body) for m in _answers_to(db, care_team[role])]
        for role in ("coordinator", "investigator", "admin")
    }
    neutral = [(MessageKind.ACK_CODE_UNKNOWN.value, UNKNOWN_CODE_REPLY)]
    assert answers == {"coordinator": neutral, "investigator": neutral, "admin": neutral}
    # Who tried what: each refusal is recorded, with the alert the code named, never the code.
    refused = _refusals(db)
    staff = world.staff
    assert [(r.actor_user_id, r.after["reason"], r.after["alert_id"]) for r in refused] == [
        (staff[("coordinator", "A")].id, "not_a_recipient", alert_id),
        (staff[("investigator", "A")].id, "not_a_recipient", alert_id),
        (staff[("admin", "A")].id, "unknown_code", None),
    ]
    assert all(r.entity == "inbound_sms" and r.entity_id.startswith("SMin") for r in refused)
    timeline = db.exec(select(AlertLog).where(AlertLog.alert_id == alert_id)).all()
    assert [e.actor for e in timeline if e.what == "sms_ack_refused"] == [
        f"staff:{staff[('coordinator', 'A')].id}",
        f"staff:{staff[('investigator', 'A')].id}",
    ]
    for row in [*refused, *timeline]:
        assert code not in repr(row.model_dump()), row
    # The nurse it was sent to still can.
    with at(T0 + timedelta(minutes=4)):
        _reply(app, client, care_team["nurse"], f"ACK {code}")
    assert _state(db, alert_id) == AlertState.ACKNOWLEDGED
    acked = db.get(Alert, alert_id)
    assert acked.acknowledged_by_user_id == staff[("nurse", "A")].id


def test_the_nurse_who_received_it_acknowledges_not_before_it_left(
    app, client, db, world, api_as, care_team
):
    alert_id = _open_alert(api_as)
    code = db.get(Alert, alert_id).ack_code
    sms = db.exec(select(OutboxMessage).where(OutboxMessage.ref == f"alert:{alert_id}")).one()
    # Claimed by a dispatcher but not yet taken by the provider: not sent to the phone yet.
    sms.status = MessageStatus.SENDING
    db.add(sms)
    db.commit()
    with at(T0 + timedelta(seconds=30)):
        _reply(app, client, care_team["nurse"], f"ACK {code}")
    assert _state(db, alert_id) == AlertState.OPEN
    assert _refusals(db)[0].after["reason"] == "not_a_recipient"
    sms.status = MessageStatus.PENDING
    db.add(sms)
    db.commit()
    with at(T0 + timedelta(minutes=1)):
        send_staff_sms(app)
    with at(T0 + timedelta(minutes=2)):
        _reply(app, client, care_team["nurse"], f"{code[:3]} {code[3:]}")
    assert _state(db, alert_id) == AlertState.ACKNOWLEDGED
    assert db.get(Alert, alert_id).ack_channel == "sms"
    kinds = [m.kind for m in _answers_to(db, care_team["nurse"])]
    assert kinds == [MessageKind.ACK_CODE_UNKNOWN.value, MessageKind.ALERT_ACK_CONFIRMED.value]


def test_an_undelivered_sms_is_not_sent_to_the_phone(app, client, db, world, api_as, care_team):
    alert_id = _open_alert(api_as)
    code = db.get(Alert, alert_id).ack_code
    with at(T0 + timedelta(minutes=1)):
        send_staff_sms(app)
    sms = db.exec(select(OutboxMessage).where(OutboxMessage.ref == f"alert:{alert_id}")).one()
    sms.status = MessageStatus.UNDELIVERED  # the carrier says it never reached the phone
    db.add(sms)
    db.commit()
    with at(T0 + timedelta(minutes=2)):
        _reply(app, client, care_team["nurse"], f"ACK {code}")
    assert _state(db, alert_id) == AlertState.OPEN


def test_a_tier_2_recipient_after_escalation_can_acknowledge(
    app, client, db, world, api_as, care_team
):
    alert_id = _open_alert(api_as)
    code = db.get(Alert, alert_id).ack_code
    provider = RecordingProvider()
    with at(T0 + timedelta(minutes=1)):
        send_staff_sms(app, provider)
    with at(T0 + timedelta(minutes=5)):
        _reply(app, client, care_team["coordinator"], f"ACK {code}")
    assert _state(db, alert_id) == AlertState.OPEN
    with at(T0 + timedelta(minutes=15)):
        assert alerts.escalate_due(session=db, now=datetime.now(UTC))["advanced"] == 1
        db.commit()
        tier2 = send_staff_sms(app, provider)
    assert {s.to for s in tier2} == {care_team["nurse"], care_team["coordinator"]}
    with at(T0 + timedelta(minutes=16)):
        _reply(app, client, care_team["coordinator"], f"ACK {code}")
    assert _state(db, alert_id) == AlertState.ACKNOWLEDGED
    assert db.get(Alert, alert_id).acknowledged_by_user_id == world.staff[("coordinator", "A")].id


def test_a_monitors_phone_never_acknowledges(app, client, db, world, api_as, care_team):
    alert_id = _open_alert(api_as)
    code = db.get(Alert, alert_id).ack_code
    monitor = world.staff[("monitor", "A")]
    monitor.phone_e164, monitor.is_phone_verified = "+33610000005", True
    db.add(monitor)
    db.commit()
    with at(T0 + timedelta(minutes=1)):
        received = send_staff_sms(app)
    assert monitor.phone_e164 not in {s.to for s in received}  # no tier pages monitors
    with at(T0 + timedelta(minutes=2)):
        _reply(app, client, monitor.phone_e164, f"ACK {code}")
    assert _state(db, alert_id) == AlertState.OPEN
    # The nurse who received it becomes a monitor (a new job at the sponsor): her phone had the
    # code, her role may no longer acknowledge.
    nurse = world.staff[("nurse", "A")]
    nurse.role = Role.MONITOR
    db.add(nurse)
    db.commit()
    with at(T0 + timedelta(minutes=3)):
        _reply(app, client, care_team["nurse"], f"ACK {code}")
    assert _state(db, alert_id) == AlertState.OPEN
    assert [r.after["reason"] for r in _refusals(db)] == ["not_a_recipient", "may_not_acknowledge"]
    assert [m.body for m in _answers_to(db, care_team["nurse"])] == [UNKNOWN_CODE_REPLY]


def test_a_bundle_recipient_acknowledges_each_alert_it_listed(
    app, client, db, world, api_as, care_team
):
    lab = api_as("coordinator", "A")
    with at(T0):
        post_negative_baseline(lab)
        first = lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]
        # A2 turns positive too: a second critical alert for the same on-call nurse.
        negative = ctdna(
            code="A-002",
            accession="A2-BASE",
            call="negative",
            collected="2026-12-14T09:00:00+01:00",
        )
        assert lab.post("/api/v1/results/ctdna", json=negative).status_code == 201
        second = lab.post(
            "/api/v1/results/ctdna", json=ctdna(code="A-002", accession="A2-POS")
        ).get_json()["alert_id"]
    assert first and second
    codes = {i: db.get(Alert, i).ack_code for i in (first, second)}
    with at(T0 + timedelta(minutes=1)):
        [bundle] = send_staff_sms(app)  # one SMS listing both codes
    assert bundle.to == care_team["nurse"]
    assert all(f"ACK {c}" in bundle.body for c in codes.values()), bundle.body
    rows = db.exec(select(OutboxMessage).where(OutboxMessage.category == "staff_alert")).all()
    assert sorted(r.bundled_into_id is not None for r in rows) == [False, True]
    with at(T0 + timedelta(minutes=2)):
        for alert_id in (second, first):
            _reply(app, client, care_team["nurse"], f"ACK {codes[alert_id]}")
    assert _state(db, first) == _state(db, second) == AlertState.ACKNOWLEDGED


def test_an_unknown_phone_gets_the_generic_answer(app, client, db, world, api_as, care_team):
    alert_id = _open_alert(api_as)
    code = db.get(Alert, alert_id).ack_code
    with at(T0 + timedelta(minutes=1)):
        send_staff_sms(app)
    stranger = "+447700900123"
    with at(T0 + timedelta(minutes=2)):
        _reply(app, client, stranger, f"ACK {code}")
    assert _state(db, alert_id) == AlertState.OPEN
    answers = _answers_to(db, stranger)
    assert [(m.category, m.kind) for m in answers] == [
        (MessageCategory.REPLY, MessageKind.UNKNOWN_SENDER.value)
    ]
    # Nothing is kept about a number we do not know.
    assert _refusals(db) == []
    assert not [r for r in db.exec(select(AuditEvent)).all() if stranger in repr(r.model_dump())]


def test_refused_acks_answers_are_capped_and_a_guessing_phone_is_paused(
    app, client, db, world, api_as, care_team
):
    alert_id = _open_alert(api_as)
    code = db.get(Alert, alert_id).ack_code
    with at(T0 + timedelta(minutes=1)):
        send_staff_sms(app)
    nurse = care_team["nurse"]
    wrong = [f"{n:06d}" for n in range(100000, 100020) if f"{n:06d}" != code]
    with at(T0 + timedelta(minutes=2)):
        # Twilio delivers one SMS twice: one refusal, one answer.
        _reply(app, client, nurse, f"ACK {wrong[0]}", sid="SMtwice")
        _reply(app, client, nurse, f"ACK {wrong[0]}", sid="SMtwice")
        assert len(_refusals(db)) == 1 and len(_answers_to(db, nurse)) == 1
        for guess in wrong[1 : rules.SMS_ACK_REFUSALS_PER_DAY]:
            _reply(app, client, nurse, f"ACK {guess}")
        # Ten refused: the right code from this phone is not believed today either.
        _reply(app, client, nurse, f"ACK {code}")
    assert _state(db, alert_id) == AlertState.OPEN
    reasons = [r.after["reason"] for r in _refusals(db)]
    assert reasons == ["unknown_code"] * rules.SMS_ACK_REFUSALS_PER_DAY + ["too_many_refusals"]
    answers = _answers_to(db, nurse)
    assert len(answers) == rules.ACK_UNKNOWN_REPLIES_PER_DAY
    assert {m.body for m in answers} == {UNKNOWN_CODE_REPLY}
    # A day after the first refusals the phone is believed again (escalation went on meanwhile).
    with at(T0 + timedelta(days=1, minutes=2, seconds=1)):
        _reply(app, client, nurse, f"ACK {code}")
    assert _state(db, alert_id) == AlertState.ACKNOWLEDGED


def test_an_alert_opened_with_four_digits_is_still_acknowledged(
    app, client, db, world, api_as, care_team
):
    alert_id = _open_alert(api_as)
    alert = db.get(Alert, alert_id)
    alert.ack_code = "4821"  # as opened before the upgrade
    db.add(alert)
    db.commit()
    provider = RecordingProvider()
    with at(T0 + timedelta(minutes=1)):
        send_staff_sms(app, provider)
    with at(T0 + timedelta(minutes=15)):
        alerts.escalate_due(session=db, now=datetime.now(UTC))  # renders the old code again
        db.commit()
        received = send_staff_sms(app, provider)
    assert {s.to for s in received} >= {care_team["nurse"]}
    assert all("ACK 4821" in s.body for s in received)
    with at(T0 + timedelta(minutes=16)):
        _reply(app, client, care_team["nurse"], "ACK 4821")
    assert _state(db, alert_id) == AlertState.ACKNOWLEDGED


def test_codes_are_six_digits_distinct_and_keyed(app, db, world, api_as, care_team):
    alert_id = _open_alert(api_as)
    assert re.fullmatch(r"[1-9][0-9]{5}", db.get(Alert, alert_id).ack_code)
    with app.app_context():
        key = alerts._code_key()
    assert db.get(Alert, alert_id).ack_code == rules.ack_code(key, alert_id)
    # A permutation: consecutive ids (a burst of alerts, or concurrent transactions) never share
    # a code; the full range maps onto itself.
    sample = [rules.permute_code_index(key, i) for i in range(30_000)]
    assert len(set(sample)) == len(sample)
    assert all(0 <= v < rules.ACK_CODE_SPACE for v in sample)
    # Not derivable from the id: another key gives other codes, and neighbours are unrelated.
    other = [rules.permute_code_index(b"another key", i) for i in range(1000)]
    assert sum(a == b for a, b in zip(sample, other, strict=False)) < 5
    steps = {(sample[i + 1] - sample[i]) % rules.ACK_CODE_SPACE for i in range(1000)}
    assert len(steps) > 990


@pytest.mark.parametrize("n", [0, 1, 899_999, 900_000, 1_800_001])
def test_the_permutation_stays_in_range(n: int) -> None:
    value = rules.permute_code_index(b"k", n)
    assert 0 <= value < rules.ACK_CODE_SPACE
    assert value == rules.permute_code_index(b"k", n % rules.ACK_CODE_SPACE)
