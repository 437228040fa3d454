"""Twilio behind `SmsProvider`: the only module that imports `twilio`.

The same code path serves production and tests: `base_url=None` talks to api.twilio.com, a
`base_url` such as http://127.0.0.1:8010 sends the very same requests (real auth, form encoding
and error parsing of the twilio library) to the fake Twilio server.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.base import values
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from urllib3.exceptions import MaxRetryError, NewConnectionError

from notifications.providers.base import (
    CODE_QUEUE_OVERFLOW,
    CODE_TOO_MANY_REQUESTS,
    PermanentSendError,
    ProviderConfigError,
    SendReceipt,
    SentMessage,
    SmsSendError,
    TransientSendError,
)

SIGNATURE_HEADER = "X-Twilio-Signature"

# 4xx codes that describe Twilio's state, not the message: retrying later is fine.
_TRANSIENT_CODES = frozenset({CODE_TOO_MANY_REQUESTS, CODE_QUEUE_OVERFLOW})
# Failures the twilio library and requests raise for a request that did not yield an answer.
_REQUEST_FAILURES = (
    TwilioRestException,
    TwilioServiceException,
    requests.RequestException,
    json.JSONDecodeError,
)
# How far back `find_messages` scans a recipient's log; reconciliation looks at minutes, not days.
_LOOKUP_SCAN_LIMIT = 200


def compute_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for a form POST of `params` to `url`."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


def validate_signature(auth_token: str, url: str, params: Any, signature: str) -> bool:
    """True when `signature` is Twilio's for this URL and form (a Flask MultiDict is fine)."""
    return bool(RequestValidator(auth_token).validate(url, params, signature))


def gather_twiml(text: str, language: str, action: str) -> str:
    """TwiML that says `text` and gathers one key, posted to `action`; nothing pressed: goodbye."""
    from twilio.twiml.voice_response import Gather, VoiceResponse

    response = VoiceResponse()
    gather = Gather(num_digits=1, action=action, method="POST", timeout=8)
    gather.say(text, language=language)
    gather.pause(length=1)
    gather.say(text, language=language)
    response.append(gather)
    response.hangup()
    return str(response)


def say_twiml(text: str | None, language: str) -> str:
    """TwiML that says `text` (if any) and hangs up."""
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    if text:
        response.say(text, language=language)
    response.hangup()
    return str(response)


def _is_loopback(host: str | None) -> bool:
    if host in (None, ""):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


class RedirectingHttpClient(TwilioHttpClient):
    """twilio's own HTTP client, optionally sending every request to another scheme+host.

    Rewriting in the HTTP client (rather than `client.api.base_url`) covers every Twilio domain and
    keeps the library's auth, encoding and error parsing real. It also remembers, per thread, the
    headers of the last response, because `TwilioRestException` drops them and a 429/503 may carry
    `Retry-After`.
    """

    def __init__(self, base_url: str | None = None, *, timeout: float = 10) -> None:
        super().__init__(timeout=timeout)
        self._base = urlsplit(base_url) if base_url else None
        if self._base is not None and (self._base.scheme not in ("http", "https")):
            raise ValueError("base_url must be an http(s) URL")
        if (
            self._base is not None
            and self.session is not None
            and _is_loopback(self._base.hostname)
        ):
            # An HTTP(S)_PROXY in the environment must not capture calls to a local fake.
            self.session.trust_env = False
        self._local = threading.local()

    @property
    def last_response_headers(self) -> Mapping[str, str]:
        """Headers of this thread's last response (empty if none arrived)."""
        return getattr(self._local, "headers", None) or {}

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send the request, to `base_url`'s scheme and host when one is set."""
        if self._base is not None:
            parts = urlsplit(url)
            url = urlunsplit(
                (self._base.scheme, self._base.netloc, parts.path, parts.query, parts.fragment)
            )
        self._local.headers = None
        response = super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        self._local.headers = response.headers
        return response


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def classify_http_error(
    status: int,
    code: int | None,
    message: str | None,
    headers: Mapping[str, str] | None = None,
) -> SmsSendError:
    """Map an HTTP error answer from Twilio to our error type."""
    retry_after = _retry_after(headers or {})
    if status == 429 or code in _TRANSIENT_CODES:
        # Twilio: "An API Request that receives an error 429 response is never processed".
        return TransientSendError(
            "rate limited" if status == 429 else "provider busy",
            may_have_been_accepted=False,
            code=code,
            http_status=status,
            retry_after=retry_after,
            provider_message=message,
        )
    if status in (401, 403, 404):
        # 404 here is a wrong account in the URL, not a missing message: also our configuration.
        return ProviderConfigError(
            "provider refused our credentials",
            may_have_been_accepted=False,
            code=code,
            http_status=status,
            provider_message=message,
        )
    if 400 <= status < 500:
        return PermanentSendError(
            "provider rejected the message", code=code, http_status=status, provider_message=message
        )
    # A 5xx (or anything stranger) can come after Twilio queued the message: creating a message
    # is not idempotent, so the caller must reconcile before resending.
    return TransientSendError(
        "provider error",
        may_have_been_accepted=True,
        code=code,
        http_status=status,
        retry_after=retry_after,
        provider_message=message,
    )


def classify_transport_error(exc: requests.RequestException) -> TransientSendError:
    """Map a network failure to our error type, deciding whether Twilio may have the message."""
    name = type(exc).__name__
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError):
        # Checked first: ConnectTimeout is also a ConnectionError. Neither got a request through.
        return TransientSendError(f"cannot connect ({name})", may_have_been_accepted=False)
    if isinstance(exc, requests.exceptions.ProxyError):
        return TransientSendError(f"cannot connect ({name})", may_have_been_accepted=False)
    if isinstance(
        exc,
        requests.exceptions.InvalidURL
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema,
    ):
        return ProviderConfigError(f"bad provider URL ({name})", may_have_been_accepted=False)
    if isinstance(exc, requests.ReadTimeout):
        return TransientSendError("timed out waiting for the answer", may_have_been_accepted=True)
    if isinstance(exc, requests.ConnectionError):
        inner = exc.args[0] if exc.args else None
        if isinstance(inner, MaxRetryError) and isinstance(inner.reason, NewConnectionError):
            # Refused / unreachable / DNS: the TCP connection never opened.
            return TransientSendError("connection refused", may_have_been_accepted=False)
        # The connection broke after the request may have been written (reset, remote closed).
        return TransientSendError(f"connection lost ({name})", may_have_been_accepted=True)
    return TransientSendError(f"transport error ({name})", may_have_been_accepted=True)


class TwilioSmsProvider:
    """Sends SMS through Twilio's Messages API, or the fake Twilio server when `base_url` is set."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        messaging_service_sid: str | None = None,
        from_number: str | None = None,
        base_url: str | None = None,
        timeout: float = 10,
        voice_from_number: str | None = None,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("account_sid and auth_token are required")
        if bool(messaging_service_sid) == bool(from_number):
            raise ValueError("give exactly one of messaging_service_sid or from_number")
        self.account_sid = account_sid
        self.messaging_service_sid = messaging_service_sid or None
        self.from_number = from_number or None
        self.base_url = base_url
        # Calls need a number of ours (a messaging service only sends SMS).
        self.voice_from_number = voice_from_number or from_number or None
        self.http_client = RedirectingHttpClient(base_url, timeout=timeout)
        self._client = Client(account_sid, auth_token, http_client=self.http_client)

    def place_call(self, *, to: str, url: str, status_callback: str) -> str:
        """Start a phone call through Programmable Voice: Twilio fetches its TwiML from `url`
        (POST, signed) and posts its outcome to `status_callback`. Returns the call's sid."""
        if not self.voice_from_number:
            raise ProviderConfigError(
                "no number to call from: set TWILIO_VOICE_FROM_NUMBER", may_have_been_accepted=False
            )
        try:
            call = self._client.calls.create(
                to=to,
                from_=self.voice_from_number,
                url=url,
                method="POST",
                status_callback=status_callback,
                status_callback_method="POST",
                machine_detection="Enable",
                timeout=25,
            )
        except _REQUEST_FAILURES as exc:
            raise self._translate(exc) from exc
        return str(call.sid)

    def __repr__(self) -> str:
        # The token stays out of reprs, which end up in logs and tracebacks.
        target = self.base_url or "api.twilio.com"
        return f"TwilioSmsProvider(account_sid={self.account_sid!r}, target={target!r})"

    def send_sms(
        self,
        *,
        to: str,
        body: str,
        status_callback: str | None,
        attempt: int = 1,
        validity_period: int | None = None,
        sender: str | None = None,
    ) -> SendReceipt:
        """Create one message (from `sender`, a number or an "MG…" Messaging Service SID, when
        given; else the default sender); raise `PermanentSendError` or `TransientSendError`."""
        from_number, service_sid = self.from_number, self.messaging_service_sid
        if sender:
            is_service = sender.startswith("MG")
            from_number = None if is_service else sender
            service_sid = sender if is_service else None
        try:
            message = self._client.messages.create(
                to=to,
                body=body,
                from_=from_number or values.unset,
                messaging_service_sid=service_sid or values.unset,
                status_callback=status_callback if status_callback is not None else values.unset,
                validity_period=validity_period if validity_period is not None else values.unset,
                attempt=attempt,
            )
        except _REQUEST_FAILURES as exc:
            raise self._translate(exc) from _cause(exc)
        if not message.sid:
            raise TransientSendError("answer without a message sid", may_have_been_accepted=True)
        return SendReceipt(
            sid=str(message.sid), status=str(message.status), error_code=message.error_code
        )

    def fetch_message(self, sid: str) -> SentMessage | None:
        """The message with this sid from Twilio's log, or None if Twilio does not know it."""
        try:
            message = self._client.messages(sid).fetch()
        except TwilioRestException as exc:
            if exc.status == 404:
                return None
            raise self._translate(exc) from _cause(exc)
        except _REQUEST_FAILURES as exc:
            raise self._translate(exc) from _cause(exc)
        return _sent_message(message)

    def find_messages(self, *, to: str, created_after: datetime) -> list[SentMessage]:
        """Recent messages to this number created after the given time, oldest first."""
        # Twilio's DateSent filters are by sent date (day granularity, empty while queued), so the
        # newest part of the recipient's log is scanned and filtered on date_created here.
        try:
            found = [
                _sent_message(m)
                for m in self._client.messages.stream(to=to, limit=_LOOKUP_SCAN_LIMIT, page_size=50)
            ]
        except _REQUEST_FAILURES as exc:
            raise self._translate(exc) from _cause(exc)
        recent = [m for m in found if m.created_at is not None and m.created_at > created_after]
        return sorted(recent, key=lambda m: m.created_at or created_after)

    def _translate(self, exc: Exception) -> SmsSendError:
        headers = self.http_client.last_response_headers
        if isinstance(exc, TwilioRestException):
            return classify_http_error(exc.status, exc.code, str(exc.msg), headers)
        if isinstance(exc, TwilioServiceException):
            return classify_http_error(exc.status, exc.code, exc.title, headers)
        if isinstance(exc, requests.RequestException):
            return classify_transport_error(exc)
        # A 2xx whose body is not JSON: Twilio probably took the message.
        return TransientSendError("unreadable answer", may_have_been_accepted=True)


def _cause(exc: Exception) -> Exception | None:
    # Twilio's error text can quote the phone number, and a chained cause is printed with every
    # logged traceback; its code and status are kept on our exception, so the chain is cut.
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        return None
    return exc


def _sent_message(message: Any) -> SentMessage:
    created = message.date_created
    if isinstance(created, datetime) and created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return SentMessage(
        sid=str(message.sid),
        to=str(message.to),
        body=str(message.body or ""),
        status=str(message.status),
        error_code=message.error_code,
        created_at=created if isinstance(created, datetime) else None,
    )
