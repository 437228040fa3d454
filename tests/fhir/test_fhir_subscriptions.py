"""FHIR Subscriptions (R4 Backport, rest-hook): a site's coordinator registers an endpoint; the
handshake, then each alert (or result) is POSTed as a signed notification Bundle naming its focus;
a failing endpoint is retried with backoff and shown in $status, and never holds up the nurse's
SMS."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import time_machine
from sqlmodel import select

from notifications.models import MessageCategory, MessageStatus, OutboxMessage
from server.audit import AuditEvent
from server.fhir import rules
from server.fhir import subscriptions as subs
from server.fhir.models import DeliveryStatus, FhirNotification
from tests.fhir.conftest import T0, ctdna, validate
from tests.results.test_results_alerts import care_team, send_staff_sms  # noqa: F401

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


@dataclass
class Receiver:
    """An endpoint on 127.0.0.1 that records what it is sent and answers `status`."""

    url: str = ""
    status: int = 200
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def bundles(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(({k: v for k, v in self.headers.items()}, body))
            self.send_response(state.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


def subscription(topic: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "alerts into the EHR",
        "criteria": f"urn:stepdown:fhir:topic:{topic}",
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [
                    {"url": f"{BACKPORT}/backport-payload-content", "valueCode": "id-only"}
                ]
            },
        },
        **extra,
    }


def register(api: Any, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    resp = api.post("/fhir/Subscription", json=body)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    resource = resp.get_json(force=True)
    secret = next(e["valueString"] for e in resource["extension"] if "signing-secret" in e["url"])
    resource["extension"] = [e for e in resource["extension"] if "signing-secret" not in e["url"]]
    validate(resource)
    return resource, secret


def run_job(db: Any, app: Any, now: datetime) -> dict[str, int]:
    with app.app_context():
        result = subs.run(session=db, now=now)
    db.commit()
    return result


def test_alerts_reach_the_endpoint_signed_and_id_only(world, db, app, api_as, receiver, care_team):  # noqa: F811
    coordinator = api_as("coordinator", "A")
    with time_machine.travel(T0 - timedelta(hours=1), tick=False):
        resource, secret = register(coordinator, subscription("alert", receiver.url))
    assert resource["status"] == "requested"
    # The secret is shown once: reads and searches never carry it.
    read = coordinator.get(f"/fhir/Subscription/{resource['id']}").get_data(as_text=True)
    assert secret not in read
    assert secret not in api_as("admin", "A").get("/fhir/Subscription").get_data(as_text=True)

    run_job(db, app, T0 - timedelta(minutes=30))
    (handshake,) = receiver.bundles()
    validate(handshake)
    status = handshake["entry"][0]["resource"]
    assert {p["name"]: p.get("valueCode") for p in status["parameter"]}["type"] == "handshake"
    assert coordinator.get(f"/fhir/Subscription/{resource['id']}").get_json()["status"] == "active"

    with time_machine.travel(T0, tick=False):
        alert_id = coordinator.post(
            "/api/v1/results/ctdna", json=ctdna("A-001", "S-1", "positive")
        ).get_json()["alert_id"]
    # Another site's alert is not this subscription's business.
    with time_machine.travel(T0, tick=False):
        api_as("coordinator", "B").post(
            "/api/v1/results/ctdna", json=ctdna("B-001", "S-2", "positive")
        )
    assert run_job(db, app, T0 + timedelta(seconds=10))["delivered"] == 1
    assert run_job(db, app, T0 + timedelta(seconds=20))["events"] == 0  # queued once only
    headers, body = receiver.received[-1]
    bundle = json.loads(body)
    validate(bundle)
    event = next(
        p for p in bundle["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"
    )
    parts = {p["name"]: p for p in event["part"]}
    assert parts["focus"]["valueReference"]["reference"].endswith(f"/fhir/Flag/{alert_id}")
    assert parts["event-number"]["valueString"] == "1"
    assert rules.verify(secret, headers[rules.SIGNATURE_HEADER], body, int(T0.timestamp()) + 10)
    assert not rules.verify(
        "another secret", headers[rules.SIGNATURE_HEADER], body, int(T0.timestamp())
    )
    # id-only: no health data and no participant in the notification itself.
    assert b"positive" not in body and b"A-001" not in body and b"0.42" not in body
    # The receiver follows the focus with its own token.
    flag = coordinator.get(f"/fhir/Flag/{alert_id}")
    assert flag.status_code == 200 and validate(flag.get_json(force=True)).status == "active"


def test_a_failing_endpoint_is_retried_shown_and_never_delays_the_sms(
    world,
    db,
    app,
    api_as,
    receiver,
    care_team,  # noqa: F811
):
    coordinator = api_as("coordinator", "A")
    with time_machine.travel(T0 - timedelta(hours=1), tick=False):
        resource, _ = register(coordinator, subscription("alert", receiver.url))
    run_job(db, app, T0 - timedelta(minutes=30))  # handshake accepted
    receiver.status = 503
    with time_machine.travel(T0, tick=False):
        coordinator.post("/api/v1/results/ctdna", json=ctdna("A-001", "F-1", "positive"))
        # The nurse's alert SMS goes out at once: the webhook lane is not in its way.
        sent = send_staff_sms(app)
    assert sent, "the on-call nurse's SMS was sent"
    staff_rows = db.exec(
        select(OutboxMessage).where(OutboxMessage.category == MessageCategory.STAFF_ALERT)
    ).all()
    assert all(m.status == MessageStatus.SENT for m in staff_rows)

    first = run_job(db, app, T0 + timedelta(seconds=10))
    assert first["failed"] == 1
    row = db.exec(select(FhirNotification).where(FhirNotification.focus.is_not(None))).one()
    assert row.status == DeliveryStatus.PENDING and row.attempts == 1
    assert row.next_attempt_at == T0 + timedelta(seconds=10 + rules.backoff_seconds(1))
    # Not retried before its time.
    assert run_job(db, app, T0 + timedelta(seconds=20))["failed"] == 0
    sid = resource["id"]
    status = coordinator.get(f"/fhir/Subscription/{sid}/$status")
    params = {p["name"]: p for p in validate(status.get_json(force=True)).model_dump()["parameter"]}
    assert params["status"]["valueCode"] == "error"
    assert "HTTP 503" in params["error"]["valueCodeableConcept"]["text"]
    assert params["stepdown-pending"]["valueInteger"] == 1
    assert params["stepdown-consecutive-failures"]["valueInteger"] == 1
    read = coordinator.get(f"/fhir/Subscription/{sid}").get_json()
    assert read["status"] == "error" and "HTTP 503" in read["error"]

    receiver.status = 200
    later = run_job(db, app, T0 + timedelta(minutes=5))
    assert later["delivered"] == 1
    assert coordinator.get(f"/fhir/Subscription/{sid}").get_json()["status"] == "active"


def test_new_results_topic_and_heartbeat(world, db, app, api_as, receiver):
    coordinator = api_as("coordinator", "A")
    heartbeat = [{"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": 600}]
    body = subscription("result", receiver.url)
    body["channel"]["extension"] = heartbeat
    with time_machine.travel(T0 - timedelta(hours=1), tick=False):
        register(coordinator, body)
    run_job(db, app, T0 - timedelta(minutes=59))
    with time_machine.travel(T0, tick=False):
        result_id = coordinator.post(
            "/api/v1/results/ctdna", json=ctdna("A-001", "R-1", "negative")
        ).get_json()["id"]
    run_job(db, app, T0 + timedelta(seconds=10))
    focus = [
        part["valueReference"]["reference"]
        for b in receiver.bundles()
        for p in b["entry"][0]["resource"]["parameter"]
        if p["name"] == "notification-event"
        for part in p["part"]
        if part["name"] == "focus"
    ]
    assert len(focus) == 1 and focus[0].endswith(f"/fhir/Observation/result-{result_id}")
    # Ten quiet minutes later: a heartbeat.
    run_job(db, app, T0 + timedelta(minutes=11))
    kinds = [
        {p["name"]: p.get("valueCode") for p in b["entry"][0]["resource"]["parameter"]}["type"]
        for b in receiver.bundles()
    ]
    assert kinds == ["handshake", "event-notification", "heartbeat"]


def test_who_may_register_read_and_end(world, db, app, api_as, client, receiver):
    body = subscription("alert", receiver.url)
    assert api_as("nurse", "A").post("/fhir/Subscription", json=body).status_code == 403
    assert api_as("monitor", "A").post("/fhir/Subscription", json=body).status_code == 403
    resource, _ = register(api_as("coordinator", "A"), body)
    sid = resource["id"]
    assert api_as("nurse", "A").get(f"/fhir/Subscription/{sid}").status_code == 200
    for role in ("admin", "coordinator", "nurse"):
        b = api_as(role, "B")
        assert b.get(f"/fhir/Subscription/{sid}").status_code == 404
        assert b.get(f"/fhir/Subscription/{sid}/$status").status_code == 404
        assert b.delete(f"/fhir/Subscription/{sid}").status_code == 404
        assert b.get("/fhir/Subscription").get_json()["total"] == 0
    # Naming another site is 404 too.
    other = subscription(
        "alert", receiver.url, extension=[{"url": subs.SITE_EXTENSION, "valueString": "SITE-B"}]
    )
    assert api_as("coordinator", "A").post("/fhir/Subscription", json=other).status_code == 404
    assert api_as("nurse", "A").delete(f"/fhir/Subscription/{sid}").status_code == 403
    assert api_as("admin", "A").delete(f"/fhir/Subscription/{sid}").status_code == 204
    assert api_as("nurse", "A").get(f"/fhir/Subscription/{sid}").get_json()["status"] == "off"
    assert run_job(db, app, datetime.now(UTC)) == {
        "handshakes": 0,
        "events": 0,
        "heartbeats": 0,
        "delivered": 0,
        "failed": 0,
        "gave_up": 0,
    }
    actions = {
        a.action
        for a in db.exec(select(AuditEvent).where(AuditEvent.entity == "fhir_subscription"))
    }
    assert actions == {"fhir_subscription.create", "fhir_subscription.end"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"criteria": "Observation?code=ctdna"}, "criteria"),
        ({"channel": {"type": "email", "endpoint": "mailto:x@example.org"}}, "channel.type"),
        (
            {"channel": {"type": "rest-hook", "endpoint": "http://ehr.example.org/hook"}},
            "channel.endpoint",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": "https://user:pw@ehr.example.org/h"}},
            "channel.endpoint",
        ),
        ({"status": "bogus"}, "status"),
        ({"resourceType": "Patient"}, "resourceType"),
    ],
)
def test_bad_subscriptions_are_refused_with_an_operation_outcome(
    world, api_as, receiver, change, field
):
    body = {**subscription("alert", receiver.url), **change}
    resp = api_as("coordinator", "A").post("/fhir/Subscription", json=body)
    assert resp.status_code == 422, resp.get_data(as_text=True)
    outcome = validate(resp.get_json(force=True))
    assert field in outcome.issue[0].diagnostics


def test_a_participant_token_has_no_subscriptions(world, client, app_token, api_as, receiver):
    resource, _ = register(api_as("coordinator", "A"), subscription("alert", receiver.url))
    headers = {"Authorization": f"Bearer {app_token('A1')}"}
    assert client.get(f"/fhir/Subscription/{resource['id']}", headers=headers).status_code == 404
    assert client.get("/fhir/Subscription", headers=headers).get_json()["total"] == 0
    body = subscription("alert", receiver.url)
    assert client.post("/fhir/Subscription", json=body, headers=headers).status_code == 404
