"""TwilioSmsProvider (the real twilio client) against the fake server, and RecordingProvider."""

from __future__ import annotations

import socket
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from notifications.fake_twilio import FakeTwilio
from notifications.providers import (
    PermanentSendError,
    ProviderConfigError,
    RecordingProvider,
    SendReceipt,
    SmsProvider,
    TransientSendError,
    TwilioSmsProvider,
    provider_from_config,
)
from notifications.providers.twilio import classify_http_error

SID = "AC" + "5" * 32
TOKEN = "provider-test-token"
SENDER = "+15005550006"
PATIENT = "+33612345678"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks_enabled=False) as server:
        yield server


def make_provider(
    fake: FakeTwilio, *, timeout: float = 5, messaging_service_sid: str | None = None
) -> TwilioSmsProvider:
    return TwilioSmsProvider(
        SID,
        TOKEN,
        messaging_service_sid=messaging_service_sid,
        from_number=None if messaging_service_sid else SENDER,
        base_url=fake.base_url,
        timeout=timeout,
    )


def test_send_returns_sid_and_fake_records_every_field(fake: FakeTwilio) -> None:
    provider = make_provider(fake)
    receipt = provider.send_sms(
        to=PATIENT,
        body="Rappel: prise de sang demain. P-0042",
        status_callback="https://app.example/twilio/status/17",
        attempt=2,
        validity_period=3600,
    )
    assert isinstance(receipt, SendReceipt)
    assert receipt.sid.startswith("SM") and len(receipt.sid) == 34
    assert receipt.status == "queued"
    assert receipt.error_code is None

    [message] = fake.messages()
    assert message.sid == receipt.sid
    assert message.to == PATIENT
    assert message.from_ == SENDER
    assert message.messaging_service_sid is None
    assert message.body == "Rappel: prise de sang demain. P-0042"
    assert message.status_callback == "https://app.example/twilio/status/17"
    assert message.attempt == 2
    assert message.validity_period == 3600


def test_messaging_service_is_sent_instead_of_from(fake: FakeTwilio) -> None:
    provider = make_provider(fake, messaging_service_sid="MG" + "1" * 32)
    receipt = provider.send_sms(to=PATIENT, body="Hi", status_callback=None)
    assert receipt.status == "accepted"
    [message] = fake.messages()
    assert message.messaging_service_sid == "MG" + "1" * 32
    assert message.from_ is None
    assert message.status_callback is None
    assert message.validity_period is None


@pytest.mark.parametrize(("service", "number"), [(None, None), ("MG" + "1" * 32, SENDER)])
def test_exactly_one_sender_is_required(service: str | None, number: str | None) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TwilioSmsProvider(
            SID, TOKEN, messaging_service_sid=service, from_number=number, base_url="http://x"
        )


def test_500_is_transient_and_may_have_been_accepted(fake: FakeTwilio) -> None:
    fake.fail_next()
    with pytest.raises(TransientSendError) as caught:
        make_provider(fake).send_sms(to=PATIENT, body="x", status_callback=None)
    err = caught.value
    assert not isinstance(err, ProviderConfigError)
    assert err.http_status == 500
    # Creating a message is not idempotent: after a 5xx Twilio may have queued it.
    assert err.may_have_been_accepted and err.is_ambiguous
    assert fake.messages() == []
    # The fault was for one request only.
    assert make_provider(fake).send_sms(to=PATIENT, body="x", status_callback=None).sid


def test_429_is_transient_not_accepted_with_retry_after(fake: FakeTwilio) -> None:
    fake.throttle_next(retry_after=7)
    with pytest.raises(TransientSendError) as caught:
        make_provider(fake).send_sms(to=PATIENT, body="x", status_callback=None)
    err = caught.value
    assert (err.http_status, err.code) == (429, 20429)
    assert err.may_have_been_accepted is False
    assert err.retry_after == 7
    assert fake.messages() == []


def test_timeout_after_twilio_accepted_is_ambiguous(fake: FakeTwilio) -> None:
    fake.hang_next(2.0, after_accept=True)
    provider = make_provider(fake, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TransientSendError) as caught:
        provider.send_sms(to=PATIENT, body="the nasty case", status_callback=None)
    assert time.monotonic() - started < 1.5  # the client gave up; it did not wait for the fake
    assert caught.value.may_have_been_accepted is True
    # ...and the fake did take the message: a blind resend would duplicate it.
    [message] = fake.messages()
    assert message.body == "the nasty case"


def test_timeout_before_accepting_is_also_ambiguous_to_the_client(fake: FakeTwilio) -> None:
    fake.hang_next(2.0)
    with pytest.raises(TransientSendError) as caught:
        make_provider(fake, timeout=0.3).send_sms(to=PATIENT, body="x", status_callback=None)
    # From the client's side the two hangs look the same; only a lookup can tell them apart.
    assert caught.value.may_have_been_accepted is True
    assert fake.messages() == []


def test_connection_refused_is_not_accepted() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The probe socket is closed: nothing listens on the port.
    provider = TwilioSmsProvider(
        SID, TOKEN, from_number=SENDER, base_url=f"http://127.0.0.1:{port}", timeout=2
    )
    with pytest.raises(TransientSendError) as caught:
        provider.send_sms(to=PATIENT, body="x", status_callback=None)
    assert caught.value.may_have_been_accepted is False


def test_unsubscribed_recipient_is_permanent(fake: FakeTwilio) -> None:
    fake.unsubscribe(PATIENT)
    with pytest.raises(PermanentSendError) as caught:
        make_provider(fake).send_sms(to=PATIENT, body="x", status_callback=None)
    err = caught.value
    assert err.is_unsubscribed
    assert (err.code, err.http_status) == (21610, 400)
    # Stays so until cleared, and only for that number.
    with pytest.raises(PermanentSendError):
        make_provider(fake).send_sms(to=PATIENT, body="again", status_callback=None)
    make_provider(fake).send_sms(to="+33698765432", body="x", status_callback=None)
    assert [m.to for m in fake.messages()] == ["+33698765432"]


def test_invalid_number_is_permanent_and_kept_out_of_the_message(fake: FakeTwilio) -> None:
    number = "+33611112222"
    fake.reject_number(number)
    with pytest.raises(PermanentSendError) as caught:
        make_provider(fake).send_sms(to=number, body="x", status_callback=None)
    err = caught.value
    assert err.is_invalid_number and not err.is_unsubscribed
    assert err.code == 21211
    # Twilio's text quotes the number; our exception's text must not (it ends up in logs).
    assert number in (err.provider_message or "")
    assert number not in str(err) and number not in repr(err.args)
    assert number not in "".join(traceback.format_exception(err))


def test_wrong_auth_token_is_a_configuration_error(fake: FakeTwilio) -> None:
    provider = TwilioSmsProvider(SID, "wrong", from_number=SENDER, base_url=fake.base_url)
    with pytest.raises(ProviderConfigError) as caught:
        provider.send_sms(to=PATIENT, body="x", status_callback=None)
    err = caught.value
    assert (err.http_status, err.code) == (401, 20003)
    assert isinstance(err, TransientSendError) and not err.may_have_been_accepted
    assert fake.messages() == []


def test_env_proxy_does_not_capture_local_fake(
    fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy that does not exist: if requests used it, the send would fail.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert make_provider(fake).send_sms(to=PATIENT, body="x", status_callback=None).sid


def test_lookups_read_the_providers_log(fake: FakeTwilio) -> None:
    provider = make_provider(fake)
    before = datetime.now(UTC) - timedelta(seconds=5)
    first = provider.send_sms(to=PATIENT, body="one", status_callback=None)
    second = provider.send_sms(to=PATIENT, body="two", status_callback=None)
    provider.send_sms(to="+33698765432", body="other", status_callback=None)

    found = provider.find_messages(to=PATIENT, created_after=before)
    assert {m.sid for m in found} == {first.sid, second.sid}
    assert {m.body for m in found} == {"one", "two"}
    assert provider.find_messages(to=PATIENT, created_after=datetime.now(UTC) + timedelta(1)) == []

    fetched = provider.fetch_message(first.sid)
    assert fetched is not None and fetched.to == PATIENT and fetched.body == "one"
    assert provider.fetch_message("SM" + "0" * 32) is None


def test_repr_does_not_show_the_token(fake: FakeTwilio) -> None:
    assert TOKEN not in repr(make_provider(fake))


@pytest.mark.parametrize(
    ("status", "code", "expected", "accepted"),
    [
        (400, 21610, PermanentSendError, None),
        (400, 21614, PermanentSendError, None),
        (400, 21611, TransientSendError, False),  # sender queue full: retry later
        (401, 20003, ProviderConfigError, False),
        (404, 20404, ProviderConfigError, False),
        (429, 20429, TransientSendError, False),
        (502, None, TransientSendError, True),
        (503, 20503, TransientSendError, True),
    ],
)
def test_http_error_classification(
    status: int, code: int | None, expected: type[Exception], accepted: bool | None
) -> None:
    err = classify_http_error(status, code, "text")
    assert type(err) is expected
    if accepted is not None:
        assert isinstance(err, TransientSendError) and err.may_have_been_accepted is accepted


def test_retry_after_http_date() -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)
    header = later.strftime("%a, %d %b %Y %H:%M:%S GMT")
    err = classify_http_error(503, None, None, {"Retry-After": header})
    assert isinstance(err, TransientSendError)
    assert err.retry_after is not None and 25 <= err.retry_after <= 31


def test_provider_from_config(fake: FakeTwilio) -> None:
    common = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_FROM_NUMBER": SENDER}
    local = provider_from_config(
        {**common, "SMS_PROVIDER": "fake", "TWILIO_BASE_URL": fake.base_url}
    )
    assert isinstance(local, TwilioSmsProvider) and local.base_url == fake.base_url
    assert local.send_sms(to=PATIENT, body="x", status_callback=None).sid
    # "twilio" never follows TWILIO_BASE_URL: a stray variable cannot divert real traffic.
    real = provider_from_config({**common, "SMS_PROVIDER": "twilio", "TWILIO_BASE_URL": "http://x"})
    assert isinstance(real, TwilioSmsProvider) and real.base_url is None
    assert isinstance(provider_from_config({"SMS_PROVIDER": "recording"}), RecordingProvider)
    with pytest.raises(ValueError):
        provider_from_config({"SMS_PROVIDER": "carrier-pigeon"})


def test_recording_provider_records_and_follows_its_script() -> None:
    provider = RecordingProvider()
    assert isinstance(provider, SmsProvider)
    ok = provider.send_sms(to=PATIENT, body="a", status_callback="https://cb/1")
    assert ok.sid == "SM" + "0" * 31 + "1" and ok.status == "queued"

    provider.fail_next(
        TransientSendError("boom", may_have_been_accepted=False),
        PermanentSendError("gone", code=21610),
    )
    with pytest.raises(TransientSendError):
        provider.send_sms(to=PATIENT, body="b", status_callback=None)
    with pytest.raises(PermanentSendError) as caught:
        provider.send_sms(to=PATIENT, body="c", status_callback=None, attempt=2)
    assert caught.value.is_unsubscribed
    provider.send_sms(to=PATIENT, body="d", status_callback=None)

    assert [c.body for c in provider.calls] == ["a", "b", "c", "d"]
    assert [c.body for c in provider.sent] == ["a", "d"]
    assert provider.calls[2].attempt == 2


def test_recording_provider_accepted_then_raised_is_findable() -> None:
    provider = RecordingProvider()
    since = datetime.now(UTC) - timedelta(seconds=1)
    provider.fail_next(TransientSendError("timeout", may_have_been_accepted=True), accepted=True)
    with pytest.raises(TransientSendError):
        provider.send_sms(to=PATIENT, body="maybe", status_callback=None)
    [found] = provider.find_messages(to=PATIENT, created_after=since)
    assert found.body == "maybe"
    assert provider.fetch_message(found.sid) == found


def test_recording_provider_number_rule() -> None:
    provider = RecordingProvider()
    provider.fail_number(PATIENT, PermanentSendError("unsubscribed", code=21610))
    for _ in range(2):
        with pytest.raises(PermanentSendError):
            provider.send_sms(to=PATIENT, body="x", status_callback=None)
    provider.fail_number(PATIENT, None)
    provider.send_sms(to=PATIENT, body="x", status_callback=None)
    assert len(provider.sent) == 1
