"""HL7 v2.5.1 ORU^R01 lab results in, over HTTP and over MLLP (a real socket): the same results
service as the JSON API (idempotency on the filler order number, quarantine, rules, alerts), and
an ACK per message (AA / AE / AR) whose MSA-2 is the sender's control id."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import time_machine
from sqlmodel import func, select

from notifications.models import MessageCategory, OutboxMessage
from server.alerts.models import Alert, AlertKind
from server.audit import AuditEvent
from server.auth.models import SiteMembership
from server.mllp import MllpServer, send
from server.results.models import LabResult, ResultStatus
from server.schedules.models import EventStatus, ScheduleEvent

T0 = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)
URL = "/api/v1/results/hl7v2"
HL7 = {"Content-Type": "x-application/hl7-v2+er7"}


def at(moment):
    return time_machine.travel(moment, tick=False)


def oru(
    code="A-001",
    accession="NT-2027-0042",
    call="POS^Positive^HL70078",
    mtm="1.24",
    collected="20270329090000+0200",
    control="NT-MSG-0001",
    study="HEROES",
    flag="",
    extra_orders=(),
):
    """A Signatera ctDNA report as Natera's interface sends it (pseudonymous: the study code is
    PID-3, assigned by the study; no name)."""
    segments = [
        "MSH|^~\\&|SIGNATERA|NATERA^2.16.840.1.113883.3.2287^ISO|STEPDOWN|SITE-A|"
        f"20270330073000+0000||ORU^R01^ORU_R01|{control}|P|2.5.1|||NE|AL|||||",
        f"PID|1||{code}^^^{study}^RI||",
        f"ORC|RE|ORD-{accession}|{accession}^NATERA||CM",
        f"OBR|1|ORD-{accession}|{accession}^NATERA|SIGNATERA^Signatera ctDNA^L|||{collected}"
        "|||||||||||||||20270330071500+0000||LAB|F",
        f"OBX|1|CWE|SIGNATERA-CALL^Signatera ctDNA call^L||{call}||||||F|||{collected}",
        f"OBX|2|NM|SIGNATERA-MTM^Mean tumor molecules per mL^L||{mtm}|"
        "{MTM}/mL^mean tumor molecules per mL^UCUM|<0.01|" + flag + "|||F",
        "NTE|1|L|Signatera is a personalized, tumor-informed ctDNA assay.",
    ]
    segments += list(extra_orders)
    return "\r".join(segments) + "\r"


def order(accession, collected="20270329090000+0200", call="NEG^Negative^HL70078"):
    return [
        f"OBR|2|ORD-{accession}|{accession}^NATERA|SIGNATERA^Signatera ctDNA^L|||{collected}"
        "|||||||||||||||20270330071500+0000||LAB|F",
        f"OBX|1|CWE|SIGNATERA-CALL^Signatera ctDNA call^L||{call}||||||F",
    ]


def msa(ack_text):
    segment = next(s for s in ack_text.split("\r") if s.startswith("MSA|"))
    return segment.split("|")[1:3]


@pytest.fixture
def care_team(world, db):
    """Site A's nurse has a verified phone and is on call."""
    nurse = world.staff[("nurse", "A")]
    nurse.phone_e164, nurse.is_phone_verified = "+33610000001", True
    db.add(nurse)
    membership = db.exec(select(SiteMembership).where(SiteMembership.user_id == nurse.id)).one()
    membership.is_on_call = True
    db.add(membership)
    db.commit()
    return nurse


def negative_baseline(lab):
    r = lab.post(
        "/api/v1/results/ctdna",
        json={
            "lab": "NATERA",
            "study": "HEROES",
            "study_code": "A-001",
            "accession_id": "BASE-1",
            "collected_at": "2026-12-14T09:00:00+01:00",
            "call": "negative",
        },
    )
    assert r.status_code == 201, r.get_json()


def post(api, text, headers=HL7):
    return api.client.post(URL, data=text.encode(), headers={**api._headers(), **headers})


def counts(db):
    db.expire_all()
    return (
        db.exec(select(func.count()).select_from(LabResult)).one(),
        db.exec(select(func.count()).select_from(Alert)).one(),
        db.exec(select(func.count()).select_from(AuditEvent)).one(),
        db.exec(select(func.count()).select_from(OutboxMessage)).one(),
    )


def test_signatera_positive_turn_opens_the_alert_and_answers_aa(world, db, api_as, care_team):
    lab = api_as("coordinator", "A")
    with at(T0):
        negative_baseline(lab)
        r = post(lab, oru())
        assert r.status_code == 201, r.get_json()
        body = r.get_json()
        assert body["ack_code"] == "AA" and body["control_id"] == "NT-MSG-0001"
        assert msa(body["ack"]) == ["AA", "NT-MSG-0001"]
        assert body["ack"].startswith("MSH|^~\\&|STEPDOWN||SIGNATERA|NATERA|")
        [result] = body["results"]
        assert result["status"] == "accepted" and result["call"] == "positive"
        assert result["mtm_per_ml"] == 1.24 and result["accession_id"] == "NT-2027-0042"
        assert result["collected_at"] == "2027-03-29T07:00:00+00:00"
        # The interface engine resends (no ACK seen): one result, no second alert.
        again = post(lab, oru(control="NT-MSG-0001-R"))
        assert again.status_code == 200 and again.get_json()["ack_code"] == "AA"
        assert again.get_json()["results"][0]["id"] == result["id"]
        # A changed report under the same filler order number is refused, as on the JSON API.
        changed = post(lab, oru(call="NEG^Negative^HL70078", control="NT-MSG-0002"))
        assert changed.status_code == 409
    alert = db.get(Alert, result["alert_id"])
    assert alert.kind == AlertKind.CTDNA_POSITIVE and alert.tier == 1
    assert len(db.exec(select(Alert)).all()) == 1
    stored = db.get(LabResult, result["id"])
    assert stored.source == "NATERA" and stored.assay == "Signatera ctDNA"
    event = db.get(ScheduleEvent, stored.event_id)
    assert event.status == EventStatus.COMPLETED and event.outcome == {"ctdna": "positive"}
    sms = db.exec(
        select(OutboxMessage).where(
            OutboxMessage.category == MessageCategory.STAFF_ALERT,
            OutboxMessage.ref == f"alert:{alert.id}",
        )
    ).all()
    assert [m.to_e164 for m in sms] == ["+33610000001"]
    assert "positive" not in sms[0].body.lower()
    audit = db.exec(
        select(AuditEvent).where(
            AuditEvent.action == "result.create", AuditEvent.entity_id == str(result["id"])
        )
    ).one()
    assert audit.actor == f"staff:{world.staff[('coordinator', 'A')].id}"


def test_signatera_negative_is_recorded_without_alert(world, db, api_as, care_team):
    with at(T0):
        r = post(api_as("coordinator", "A"), oru(call="NEG^Negative^HL70078", mtm="0.00"))
    assert r.status_code == 201, r.get_json()
    [result] = r.get_json()["results"]
    assert result["call"] == "negative" and result["mtm_per_ml"] == 0.0
    assert result["alert_id"] is None
    assert db.exec(select(Alert)).all() == []


def test_signatera_indeterminate_asks_for_a_redraw(world, db, api_as, care_team):
    with at(T0):
        # Coded as text in an ST observation, with the abnormal flag: both read the same.
        r = post(api_as("coordinator", "A"), oru(call="Indeterminate", flag="IND"))
    assert r.status_code == 201, r.get_json()
    [result] = r.get_json()["results"]
    assert result["call"] == "indeterminate" and result["status"] == "accepted"
    alert = db.get(Alert, result["alert_id"])
    assert alert.kind == AlertKind.REDRAW_NEEDED
    redraws = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == world.participants["A1"].id,
            ScheduleEvent.status == EventStatus.OPEN,
            ScheduleEvent.label == "ctDNA redraw (previous test failed)",
        )
    ).all()
    assert len(redraws) == 1


def test_unknown_participant_and_unreadable_call_are_quarantined(world, db, api_as):
    lab = api_as("coordinator", "A")
    with at(T0):
        unknown = post(lab, oru(code="ZZ-999", accession="NT-9"))
        outside = post(lab, oru(code="B-001", accession="NT-10"))  # another site's participant
        fuzzy = post(lab, oru(accession="NT-11", call="See comment^^L"))
    for r in (unknown, outside, fuzzy):
        assert r.status_code == 201 and r.get_json()["ack_code"] == "AA", r.get_json()
        assert r.get_json()["results"][0]["status"] == "quarantined"
        assert r.get_json()["results"][0]["participant_id"] is None
    assert db.exec(select(Alert)).all() == []
    held = db.exec(select(LabResult).where(LabResult.status == ResultStatus.QUARANTINED)).all()
    assert {r.accession_id for r in held} == {"NT-9", "NT-10", "NT-11"}


@pytest.mark.parametrize(
    ("text", "status", "field"),
    [
        ("this is not HL7", 400, "MSH"),
        (oru().replace("ORU^R01^ORU_R01", "ADT^A01^ADT_A01"), 400, "MSH-9"),
        (oru().replace("|2.5.1|", "|2.9|"), 400, "MSH-12"),
        (oru().replace("|NT-2027-0042^NATERA|SIG", "||SIG"), 422, "OBR[1] OBR-3"),
        (oru(collected="20270329090000"), 422, "OBR[1] OBR-7"),
        (oru(collected="20290329090000+0200"), 422, "OBR-7"),  # in the future
        (oru(code=""), 422, "PID-3"),
        # The second order is broken: the first one is not recorded either.
        (oru(extra_orders=order("NT-2", collected="2027-03-29")), 422, "OBR[2] OBR-7"),
    ],
)
def test_malformed_messages_change_nothing(world, db, api_as, text, status, field):
    lab = api_as("coordinator", "A")
    with at(T0):
        before = counts(db)
        r = post(lab, text)
        assert r.status_code == status, r.get_json()
        assert field in r.get_json()["error"]["fields"], r.get_json()
        assert counts(db) == before


def test_two_orders_in_one_message_are_two_results(world, db, api_as):
    with at(T0):
        r = post(api_as("coordinator", "A"), oru(extra_orders=order("NT-2")))
    assert r.status_code == 201, r.get_json()
    assert [x["accession_id"] for x in r.get_json()["results"]] == ["NT-2027-0042", "NT-2"]


def test_lf_line_endings_and_plain_text_are_read(world, db, api_as):
    with at(T0):
        r = post(
            api_as("coordinator", "A"),
            oru(call="NEG^Negative^HL70078").replace("\r", "\r\n"),
            headers={"Content-Type": "text/plain"},
        )
    assert r.status_code == 201, r.get_json()


def test_needs_a_lab_token(client, world):
    r = client.post(URL, data=oru().encode(), headers=HL7)
    assert r.status_code == 401
    assert r.get_json()["error"]["code"] == "unauthorized"


@pytest.fixture
def mllp(app, db):
    server = MllpServer(app, ("127.0.0.1", 0), idle_timeout=5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_oru_over_mllp_opens_the_same_alert_as_the_json_api(world, db, api_as, care_team, mllp):
    """Two participants, the same negative-then-positive history: one by JSON, one over MLLP.
    Both end with the same alert, tier and first SMS recipients."""
    lab = api_as("coordinator", "A")
    with at(T0):
        negative_baseline(lab)
        json_positive = lab.post(
            "/api/v1/results/ctdna",
            json={
                "lab": "NATERA",
                "study": "HEROES",
                "study_code": "A-001",
                "accession_id": "JSON-1",
                "collected_at": "2027-03-29T09:00:00+02:00",
                "call": "positive",
                "mtm_per_ml": 1.24,
            },
        )
        assert json_positive.status_code == 201
        baseline = send(
            "127.0.0.1",
            mllp,
            oru(
                code="A-002",
                accession="BASE-2",
                call="NEG^Negative^HL70078",
                collected="20261214090000+0100",
                control="M-1",
            ),
        )
        assert msa(baseline) == ["AA", "M-1"]
        ack = send("127.0.0.1", mllp, oru(code="A-002", accession="NT-77", control="M-2"))
    assert msa(ack) == ["AA", "M-2"], ack
    db.expire_all()
    by_json = db.get(Alert, json_positive.get_json()["alert_id"])
    result = db.exec(select(LabResult).where(LabResult.accession_id == "NT-77")).one()
    by_mllp = db.exec(select(Alert).where(Alert.result_id == result.id)).one()
    assert (by_mllp.kind, by_mllp.tier, by_mllp.state, by_mllp.next_tier_at) == (
        by_json.kind,
        by_json.tier,
        by_json.state,
        by_json.next_tier_at,
    )
    assert by_mllp.participant_id == world.participants["A2"].id

    def recipients(alert):
        rows = db.exec(select(OutboxMessage).where(OutboxMessage.ref == f"alert:{alert.id}")).all()
        return sorted(m.to_e164 for m in rows)

    assert recipients(by_mllp) == recipients(by_json) == ["+33610000001"]
    audit = db.exec(
        select(AuditEvent).where(
            AuditEvent.action == "result.create", AuditEvent.entity_id == str(result.id)
        )
    ).one()
    assert audit.actor == "hl7:mllp:127.0.0.1"


def test_mllp_answers_ar_and_ae_and_keeps_the_connection(world, db, mllp):
    import socket

    from server.mllp import frame

    with at(T0), socket.create_connection(("127.0.0.1", mllp), timeout=5) as sock:
        replies = []
        for text in (
            "garbage that is not HL7",
            oru(control="BAD-OBR").replace("|NT-2027-0042^NATERA|SIG", "||SIG"),
            oru(call="NEG^Negative^HL70078", control="GOOD-1"),
        ):
            sock.sendall(frame(text))
            data = b""
            while not data.endswith(b"\x1c\r"):
                data += sock.recv(65536)
            assert data.startswith(b"\x0b")
            replies.append(data[1:-2].decode())
    assert msa(replies[0]) == ["AR", ""]
    assert msa(replies[1]) == ["AE", "BAD-OBR"]
    err = next(s for s in replies[1].split("\r") if s.startswith("ERR|"))
    assert "101^Required field missing^HL70357" in err and "OBR-3" in err
    assert msa(replies[2]) == ["AA", "GOOD-1"]
    db.expire_all()
    assert [r.accession_id for r in db.exec(select(LabResult)).all()] == ["NT-2027-0042"]


def _damaged(count, seed=20261201):
    """Realistic messages damaged at random (separators, letters, cut segments): what a broken
    interface or a bad copy-paste sends. Fixed seed: the same cases every run."""
    import random

    rng = random.Random(seed)
    base = oru(extra_orders=order("NT-2"))
    alphabet = "|^~\\&\r\n MSHPIDOBRX0123456789+-.:\u00ff\x0b\x1c"
    for _ in range(count):
        chars = list(base)
        for _ in range(rng.randint(1, 12)):
            pos = rng.randrange(len(chars))
            roll = rng.random()
            if roll < 0.4:
                del chars[pos]
            elif roll < 0.8:
                chars.insert(pos, rng.choice(alphabet))
            else:
                del chars[pos : pos + rng.randint(1, 40)]
        yield "".join(chars)


def test_damaged_messages_are_refused_never_a_crash():
    from server.errors import DomainError
    from server.results import hl7v2

    outcomes = {"read": 0, "AE": 0, "AR": 0}
    for text in _damaged(300):
        try:
            hl7v2.parse(text)
            outcomes["read"] += 1
        except hl7v2.Rejected:
            outcomes["AR"] += 1
        except DomainError:
            outcomes["AE"] += 1
    # Each way out is taken (the damage is not all harmless, nor all fatal); nothing else raised.
    assert all(outcomes.values()), outcomes


def test_damaged_messages_over_http_are_4xx_or_recorded(world, db, api_as):
    lab = api_as("coordinator", "A")
    with at(T0):
        for text in _damaged(60, seed=7):
            r = post(lab, text)
            assert r.status_code in (200, 201, 400, 409, 422), (r.status_code, text)
            if r.status_code >= 400:
                assert r.get_json()["error"]["fields"], r.get_json()


def test_an_mllp_listener_for_one_site_quarantines_other_sites_participants(app, db, world):
    """`stepdown mllp --site SITE-B`: Boston's engine cannot attach a result to a Paris
    participant (held for review, as the JSON API does for a lab outside the site)."""
    server = MllpServer(app, ("127.0.0.1", 0), site_ids=[world.sites["B"].id], idle_timeout=5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with at(T0):
            paris = send("127.0.0.1", server.server_address[1], oru(code="A-001", control="S-1"))
            boston = send(
                "127.0.0.1",
                server.server_address[1],
                oru(
                    code="B-001",
                    accession="NT-B",
                    call="NEG^Negative^HL70078",
                    collected="20270329090000-0400",
                    control="S-2",
                ),
            )
    finally:
        server.shutdown()
        server.server_close()
    assert msa(paris) == ["AA", "S-1"] and msa(boston) == ["AA", "S-2"]
    db.expire_all()
    rows = {r.accession_id: r for r in db.exec(select(LabResult)).all()}
    assert rows["NT-2027-0042"].status == ResultStatus.QUARANTINED
    assert rows["NT-2027-0042"].participant_id is None
    assert rows["NT-B"].status == ResultStatus.ACCEPTED
    assert rows["NT-B"].participant_id == world.participants["B1"].id
    assert db.exec(select(Alert)).all() == []


@pytest.mark.parametrize(
    ("call", "flag", "read_as"),
    [
        ("NEG^Negative^HL70078", "POS", "negative"),  # the stated value wins over a flag
        ("See report^^L", "POS", "positive"),  # no coded value: the abnormal flag says it
        ("Not detected", "", "negative"),
        ("QNS^Quantity not sufficient^HL70078", "", "insufficient_sample"),
        ("See report^^L", "", "(no call)"),  # quarantined by the service
    ],
)
def test_the_call_is_read_from_the_value_then_the_flag(call, flag, read_as):
    from server.results import hl7v2

    [parsed] = hl7v2.parse(oru(call=call, flag=flag)).orders
    assert parsed["call"] == read_as


def test_two_observations_that_disagree_are_held_for_review(world, db, api_as):
    conflicting = oru().replace(
        "NTE|1|L|",
        "OBX|3|CWE|SIGNATERA-CALL^Signatera ctDNA call^L||NEG^Negative^HL70078||||||F\rNTE|1|L|",
    )
    with at(T0):
        r = post(api_as("coordinator", "A"), conflicting)
    assert r.status_code == 201, r.get_json()
    [result] = r.get_json()["results"]
    assert result["status"] == "quarantined" and "conflicting" in result["quarantine_reason"]
    assert db.exec(select(Alert)).all() == []
