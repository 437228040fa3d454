"""The fake Twilio server: API answers, signed webhooks, faults, control endpoints, lifecycle."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from twilio.request_validator import RequestValidator
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from notifications.fake_twilio import FakeTwilio
from notifications.providers import PermanentSendError, TwilioSmsProvider

SID = "AC" + "7" * 32
TOKEN = "fake-test-token"
SENDER = "+15005550006"
PATIENT = "+33612345678"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Hit:
    url: str
    form: dict[str, str]
    headers: dict[str, str]
    at: float


class Receiver:
    """A tiny HTTP server in a thread that records the webhooks it receives."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.hits: list[Hit] = []
        self._cond = threading.Condition()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        hit = Hit(request.url, dict(request.form), dict(request.headers), time.monotonic())
        with self._cond:
            self.hits.append(hit)
            self._cond.notify_all()
        reply = Response("<Response/>", status=self.status, mimetype="text/xml")
        return reply(environ, start_response)

    def wait(self, count: int, timeout: float = 5.0) -> list[Hit]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.hits) >= count, timeout)
            return list(self.hits)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def signature_ok(hit: Hit, token: str = TOKEN) -> bool:
    return bool(
        RequestValidator(token).validate(hit.url, hit.form, hit.headers["X-Twilio-Signature"])
    )


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callback_delay=0.02) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    sink = Receiver()
    yield sink
    sink.close()


def api(fake: FakeTwilio) -> str:
    return f"{fake.base_url}/2010-04-01/Accounts/{SID}/Messages.json"


def post_message(
    fake: FakeTwilio,
    auth: tuple[str, str] | None = (SID, TOKEN),
    fields: dict[str, str] | None = None,
    **form: str,
) -> Any:
    """POST a message with raw HTTP; an empty value leaves that field out."""
    data = {"To": PATIENT, "From": SENDER, "Body": "Hello"}
    data.update(fields or {})
    data.update(form)
    data = {k: v for k, v in data.items() if v}
    return requests.post(api(fake), data=data, auth=auth, timeout=5)


def provider(fake: FakeTwilio) -> TwilioSmsProvider:
    return TwilioSmsProvider(SID, TOKEN, from_number=SENDER, base_url=fake.base_url, timeout=5)


# ---- the Messages API ---------------------------------------------------------------------


def test_create_answers_like_twilio(fake: FakeTwilio) -> None:
    started = time.monotonic()
    reply = post_message(fake, Body="Rappel €5")
    assert reply.status_code == 201
    data = reply.json()
    assert re.fullmatch(r"SM[0-9a-f]{32}", data["sid"])
    assert data["status"] == "queued"
    assert (data["to"], data["from"], data["body"]) == (PATIENT, SENDER, "Rappel €5")
    assert data["error_code"] is None
    assert data["account_sid"] == SID
    assert data["uri"] == f"/2010-04-01/Accounts/{SID}/Messages/{data['sid']}.json"
    created = parsedate_to_datetime(data["date_created"])
    assert abs((created - datetime.now(UTC)).total_seconds()) < 5

    [message] = fake.messages()
    assert message.sid == data["sid"]
    assert started <= message.received_monotonic <= time.monotonic()
    assert message.received_at.tzinfo is not None


def test_messaging_service_answers_accepted(fake: FakeTwilio) -> None:
    reply = post_message(fake, From="", MessagingServiceSid="MG" + "2" * 32)
    assert reply.status_code == 201
    assert reply.json()["status"] == "accepted"
    assert reply.json()["messaging_service_sid"] == "MG" + "2" * 32


@pytest.mark.parametrize(
    "auth",
    [None, (SID, "wrong-token"), ("AC" + "9" * 32, TOKEN)],
    ids=["no-auth", "wrong-token", "wrong-account"],
)
def test_bad_credentials_are_401_20003(fake: FakeTwilio, auth: tuple[str, str] | None) -> None:
    reply = post_message(fake, auth=auth)
    assert reply.status_code == 401
    assert reply.json()["code"] == 20003
    assert reply.json()["status"] == 401
    assert fake.messages() == []


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"To": ""}, 21604),
        ({"Body": ""}, 21602),
        ({"From": ""}, 21603),
        ({"To": "0612345678"}, 21211),
        ({"Body": "x" * 1601}, 21617),
    ],
)
def test_invalid_requests_get_twilio_error_json(
    fake: FakeTwilio, form: dict[str, str], code: int
) -> None:
    reply = post_message(fake, fields=form)
    assert reply.status_code == 400
    payload = reply.json()
    assert payload["code"] == code
    assert payload["status"] == 400
    assert payload["message"]
    assert payload["more_info"].endswith(str(code))
    assert fake.messages() == []


def test_list_pages_newest_first_and_fetch(fake: FakeTwilio) -> None:
    sids = [post_message(fake, Body=f"m{i}").json()["sid"] for i in range(3)]
    post_message(fake, To="+33698765432")
    reply = requests.get(api(fake), params={"To": PATIENT, "PageSize": "2"}, auth=(SID, TOKEN))
    page = reply.json()
    assert [m["sid"] for m in page["messages"]] == [sids[2], sids[1]]
    assert page["next_page_uri"]
    second = requests.get(fake.base_url + page["next_page_uri"], auth=(SID, TOKEN)).json()
    assert [m["sid"] for m in second["messages"]] == [sids[0]]
    assert second["next_page_uri"] is None

    one = requests.get(api(fake).replace(".json", f"/{sids[0]}.json"), auth=(SID, TOKEN))
    assert one.status_code == 200 and one.json()["body"] == "m0"
    missing = requests.get(api(fake).replace(".json", "/SMnope.json"), auth=(SID, TOKEN))
    assert missing.status_code == 404 and missing.json()["code"] == 20404


# ---- status callbacks and inbound SMS -----------------------------------------------------


def test_status_callbacks_are_signed_sent_then_delivered(
    fake: FakeTwilio, receiver: Receiver
) -> None:
    url = receiver.url("/twilio/status/42?x=1")
    receipt = provider(fake).send_sms(to=PATIENT, body="Hi", status_callback=url)
    hits = receiver.wait(2)
    assert [h.form["MessageStatus"] for h in hits] == ["sent", "delivered"]
    for hit in hits:
        assert hit.url == url
        assert hit.form["MessageSid"] == receipt.sid
        assert hit.form["SmsStatus"] == hit.form["MessageStatus"]
        assert (hit.form["AccountSid"], hit.form["To"], hit.form["From"]) == (SID, PATIENT, SENDER)
        assert "ErrorCode" not in hit.form
        assert hit.headers["I-Twilio-Idempotency-Token"]
        assert signature_ok(hit)
    # The validator really checks: another token, or one changed parameter, fails.
    assert not signature_ok(hits[0], token="other-token")
    tampered = Hit(hits[0].url, {**hits[0].form, "MessageStatus": "failed"}, hits[0].headers, 0)
    assert not signature_ok(tampered)

    message = fake.wait_for_callbacks(receipt.sid, 2)
    assert message.status == "delivered" and message.sent_at is not None
    assert [c.http_status for c in message.callbacks] == [204, 204]


def test_delivery_failure_reports_error_code(fake: FakeTwilio, receiver: Receiver) -> None:
    fake.fail_delivery(PATIENT, status="failed", error_code=30005)
    receipt = provider(fake).send_sms(
        to=PATIENT, body="Hi", status_callback=receiver.url("/twilio/status/1")
    )
    hits = receiver.wait(2)
    assert [h.form["MessageStatus"] for h in hits] == ["sent", "failed"]
    assert "ErrorCode" not in hits[0].form
    assert hits[1].form["ErrorCode"] == "30005"
    assert all(signature_ok(h) for h in hits)
    message = fake.wait_for_callbacks(receipt.sid, 2)
    assert (message.status, message.error_code) == ("failed", 30005)


def test_callbacks_can_be_disabled(fake: FakeTwilio, receiver: Receiver) -> None:
    fake.callbacks_enabled = False
    receipt = provider(fake).send_sms(to=PATIENT, body="Hi", status_callback=receiver.url("/cb"))
    # The message still progresses; only the POSTs are withheld.
    fake.wait_until(lambda: (fake.message(receipt.sid) or receipt).status == "delivered")
    time.sleep(0.05)
    assert receiver.hits == []


def test_manual_callback_for_duplicates_and_late_states(
    fake: FakeTwilio, receiver: Receiver
) -> None:
    fake.callbacks_enabled = False
    receipt = provider(fake).send_sms(to=PATIENT, body="Hi", status_callback=receiver.url("/cb"))
    attempt = fake.post_status_callback(receipt.sid, "sent")
    assert attempt.http_status == 204
    [hit] = receiver.hits
    assert hit.form["MessageStatus"] == "sent" and signature_ok(hit)


def test_unreachable_callback_is_recorded_not_raised(fake: FakeTwilio) -> None:
    receipt = provider(fake).send_sms(
        to=PATIENT, body="Hi", status_callback="http://127.0.0.1:9/nobody-home"
    )
    message = fake.wait_for_callbacks(receipt.sid, 2)
    assert all(c.http_status is None and c.error for c in message.callbacks)


def test_inbound_sms_is_signed(fake: FakeTwilio, receiver: Receiver) -> None:
    url = receiver.url("/twilio/inbound")
    result = fake.send_inbound(url, PATIENT, SENDER, "7", extra_params={"Custom": "yes"})
    assert result.http_status == 204
    [hit] = receiver.hits
    assert signature_ok(hit)
    form = hit.form
    assert (form["From"], form["To"], form["Body"], form["NumMedia"]) == (PATIENT, SENDER, "7", "0")
    assert form["AccountSid"] == SID
    assert form["MessageSid"] == result.message_sid and re.fullmatch(
        r"SM[0-9a-f]{32}", form["MessageSid"]
    )
    assert form["Custom"] == "yes"
    assert "OptOutType" not in form


def test_inbound_stop_opts_out_until_start(fake: FakeTwilio, receiver: Receiver) -> None:
    url = receiver.url("/twilio/inbound")
    fake.send_inbound(url, PATIENT, SENDER, " stop ")
    assert receiver.hits[0].form["OptOutType"] == "STOP"
    with pytest.raises(PermanentSendError) as caught:
        provider(fake).send_sms(to=PATIENT, body="Hi", status_callback=None)
    assert caught.value.is_unsubscribed
    # "STOP please" is not a keyword: Twilio matches the whole body.
    fake.send_inbound(url, PATIENT, SENDER, "STOP please")
    assert "OptOutType" not in receiver.hits[1].form
    fake.send_inbound(url, PATIENT, SENDER, "START")
    assert receiver.hits[2].form["OptOutType"] == "START"
    assert provider(fake).send_sms(to=PATIENT, body="Hi", status_callback=None).sid


# ---- faults -------------------------------------------------------------------------------


def test_fault_for_a_duration_expires(fake: FakeTwilio) -> None:
    fake.fail_for(0.2, status=503)
    assert post_message(fake).status_code == 503
    assert post_message(fake).status_code == 503
    time.sleep(0.25)
    assert post_message(fake).status_code == 201
    assert [c.http_status for c in fake.api_calls()] == [503, 503, 201]


def test_faults_apply_in_order_and_count_down(fake: FakeTwilio) -> None:
    fake.fail_next(2)
    fake.throttle_next(1, retry_after=3)
    codes = [post_message(fake).status_code for _ in range(4)]
    assert codes == [500, 500, 429, 201]


def test_hang_then_answers_late_with_the_message_recorded(fake: FakeTwilio) -> None:
    fake.hang_next(0.3, after_accept=True)
    started = time.monotonic()
    reply = post_message(fake)
    assert time.monotonic() - started >= 0.3
    assert reply.status_code == 201
    assert fake.messages()[0].received_monotonic - started < 0.25  # recorded before the wait


# ---- control endpoints (for other processes) ----------------------------------------------


def control(fake: FakeTwilio, method: str, path: str, body: Any = None) -> Any:
    reply = requests.request(method, f"{fake.base_url}/_fake/{path}", json=body, timeout=5)
    return reply.status_code, reply.json()


def test_control_faults_over_http(fake: FakeTwilio) -> None:
    assert control(fake, "POST", "faults", {"mode": "error", "count": 1})[0] == 200
    assert (
        control(fake, "POST", "faults", {"mode": "throttle", "count": 1, "retry_after": 2})[0]
        == 200
    )
    first, second = post_message(fake), post_message(fake)
    assert first.status_code == 500 and first.json()["code"] == 20500
    assert second.status_code == 429 and second.json()["code"] == 20429
    assert second.headers["Retry-After"] == "2"

    control(fake, "POST", "faults", {"mode": "unsubscribed", "to": PATIENT})
    control(fake, "POST", "faults", {"mode": "invalid_number", "to": "+33600000001"})
    _, state = control(fake, "GET", "faults")
    assert state["unsubscribed"] == [PATIENT] and state["invalid_numbers"] == ["+33600000001"]
    assert post_message(fake).json()["code"] == 21610
    assert post_message(fake, To="+33600000001").json()["code"] == 21211

    control(fake, "POST", "faults", {"mode": "unsubscribed", "to": PATIENT, "enabled": False})
    assert post_message(fake).status_code == 201
    _, state = control(fake, "DELETE", "faults")
    assert state == {"faults": [], "unsubscribed": [], "invalid_numbers": [], "undeliverable": {}}


@pytest.mark.parametrize(
    "body",
    [{"mode": "explode"}, {"mode": "error", "count": 0}, {"mode": "unsubscribed"}, [1, 2]],
)
def test_control_rejects_bad_fault_requests(fake: FakeTwilio, body: Any) -> None:
    status, payload = control(fake, "POST", "faults", body)
    assert status == 400 and payload["error"]


def test_control_messages_filter_and_clear(fake: FakeTwilio) -> None:
    post_message(fake, Body="first")
    post_message(fake, To="+33698765432", Body="other")
    post_message(fake, Body="second")
    _, listed = control(fake, "GET", "messages")
    assert [m["body"] for m in listed] == ["first", "other", "second"]  # newest last
    _, mine = control(fake, "GET", f"messages?to={requests.utils.quote(PATIENT)}")
    assert [m["body"] for m in mine] == ["first", "second"]
    assert mine[0]["received_at"] and isinstance(mine[0]["received_monotonic"], float)
    _, one = control(fake, "GET", f"messages/{mine[0]['sid']}")
    assert one["body"] == "first"
    control(fake, "DELETE", "messages")
    assert control(fake, "GET", "messages")[1] == []


def test_control_settings_inbound_and_status(fake: FakeTwilio, receiver: Receiver) -> None:
    _, settings = control(
        fake, "POST", "settings", {"callbacks_enabled": False, "callback_delay": 0}
    )
    assert settings["callbacks_enabled"] is False and settings["callback_delay"] == 0
    sid = post_message(fake, StatusCallback=receiver.url("/cb")).json()["sid"]

    status, attempt = control(fake, "POST", f"messages/{sid}/status", {"status": "delivered"})
    assert status == 200 and attempt["http_status"] == 204
    status, result = control(
        fake,
        "POST",
        "inbound",
        {"url": receiver.url("/in"), "from": PATIENT, "to": SENDER, "body": "OK"},
    )
    assert status == 200 and result["http_status"] == 204
    hits = receiver.wait(2)
    assert [h.url.rsplit("/", 1)[1] for h in hits] == ["cb", "in"]
    assert all(signature_ok(h) for h in hits)
    assert control(fake, "POST", "inbound", {"url": receiver.url("/in")})[0] == 400


def test_developer_page_lists_messages_escaped(fake: FakeTwilio) -> None:
    post_message(fake, Body="<script>alert(1)</script> rendez-vous")
    page = requests.get(f"{fake.base_url}/_fake/", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; rendez-vous" in page.text
    assert "<script>" not in page.text
    # Its status as of the page (the fake moves it on after callback_delay: under load, already).
    assert PATIENT in page.text
    assert re.search(r"<td>(queued|sending|sent|delivered)</td>", page.text), page.text
    # No external assets: nothing to fetch from a CDN on an offline machine.
    assert "src=" not in page.text and "<link" not in page.text


# ---- lifecycle ----------------------------------------------------------------------------


def test_stop_is_prompt_with_a_hung_request_and_leaves_no_threads() -> None:
    before = set(threading.enumerate())
    fake = FakeTwilio(account_sid=SID, auth_token=TOKEN).start()
    fake.hang_next(30)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(post_message(fake).status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    client = threading.Thread(target=call)
    client.start()
    # A client that connects and never sends a byte: its handler thread blocks reading.
    idle = socket.create_connection(("127.0.0.1", int(fake.base_url.rsplit(":", 1)[1])))
    fake.wait_until(lambda: fake.faults()["faults"] == [])  # the request took the fault
    time.sleep(0.05)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2
    # Checked at once: stop() itself must have joined every thread the fake started.
    leftover = [t for t in threading.enumerate() if t not in before and t is not client]
    assert leftover == []
    client.join(5)
    idle.close()
    # The hung request is woken and answered 503, or its connection is cut: never left waiting.
    assert outcome == [503] or isinstance(outcome[0], requests.RequestException)


def test_standalone_process_serves_and_exits_on_sigterm() -> None:
    command = [sys.executable, "-m", "notifications.fake_twilio", "--port", "0"]
    command += ["--account-sid", SID, "--auth-token", TOKEN, "--callback-delay", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        # If the child never prints its address, kill it rather than block the suite on readline.
        watchdog = threading.Timer(15, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            assert match, line
            base = match.group(0)
            assert requests.get(f"{base}/_fake/health", timeout=5).json()["ok"] is True
            sender = TwilioSmsProvider(SID, TOKEN, from_number=SENDER, base_url=base, timeout=5)
            receipt = sender.send_sms(to=PATIENT, body="from elsewhere", status_callback=None)
            listed = requests.get(f"{base}/_fake/messages", timeout=5).json()
            assert [m["sid"] for m in listed] == [receipt.sid]
        finally:
            watchdog.cancel()
            proc.send_signal(signal.SIGTERM)
            _, errors = proc.communicate(timeout=10)
    assert proc.returncode == 0, errors


def test_port_in_use_raises_instead_of_exiting(fake: FakeTwilio) -> None:
    port = int(fake.base_url.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        FakeTwilio(port=port).start()


def test_json_helpers_round_trip(fake: FakeTwilio) -> None:
    post_message(fake)
    [message] = fake.messages()
    assert json.loads(json.dumps(message.to_dict()))["sid"] == message.sid
