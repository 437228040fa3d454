"""A fake Twilio Messages API on 127.0.0.1, for development, tests and benchmarks.

The real twilio library talks to it (see `TwilioSmsProvider(base_url=...)`), so auth, form
encoding and error parsing stay real. It records every message, answers like Twilio (201 with an
SM sid, or Twilio error JSON), posts signed status callbacks ("sent" then "delivered", or a
delivery failure), signs simulated inbound SMS, and can be told to misbehave: 5xx, 429, hangs
(optionally after accepting the message), unsubscribed (21610) or invalid (21211) numbers. It can
answer each creation after a realistic delay (`latency`) and send its webhooks to a local http
address while signing them for the app's public https:// URL, as a TLS-terminating proxy would
(`deliver_via`): benchmarks run the app with production settings that way.

In-process:  `with FakeTwilio(auth_token=...) as fake: ... fake.base_url ...`
Standalone:  `python -m notifications.fake_twilio --port 8010 --auth-token T --callback-delay 0.5`,
scripted from other processes through the JSON control endpoints under `/_fake/`.

The control endpoints are unauthenticated and can make the fake POST to any URL: keep it on the
loopback interface, which is the default.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import html
import itertools
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from notifications.providers.twilio import SIGNATURE_HEADER, compute_signature
from notifications.segments import count_segments

# Development defaults; they match config.settings.DevelopmentConfig.
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN = "dev-fake-auth-token"
DEFAULT_FROM = "+15005550006"
DEFAULT_PORT = 8010
API_VERSION = "2010-04-01"
MAX_BODY_CHARS = 1600

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
# Twilio's default opt-out / opt-in / help keywords (whole body, case-insensitive).
_OPT_OUT_KEYWORDS = {
    "STOP": frozenset(
        {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
    ),
    "START": frozenset({"START", "UNSTOP"}),
    "HELP": frozenset({"HELP", "INFO"}),
}
_FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed"})

# What a fault does to a message creation:
#   error     answer `status` (5xx, code 20500); nothing recorded
#   throttle  answer 429 (code 20429, optional Retry-After); nothing recorded, as Twilio promises
#   hang      wait `seconds`, answer 503, nothing recorded; with `after_accept`, record the message
#             (and schedule its callbacks) first and answer 201 late: "Twilio took it but the
#             client timed out", the case that makes blind retries double-send
#   slow      wait `seconds`, then proceed normally (latency, for benchmarks)
FaultMode = Literal["error", "throttle", "hang", "slow"]
_FAULT_MODES: tuple[str, ...] = ("error", "throttle", "hang", "slow")


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc2822(moment: datetime | None) -> str | None:
    return format_datetime(moment) if moment is not None else None


def _new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True)
class CallbackAttempt:
    """One webhook POST the fake made (status callback or inbound SMS) and how it went."""

    url: str
    params: dict[str, str]
    http_status: int | None  # None when the connection itself failed
    error: str | None
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "url": self.url,
            "params": self.params,
            "http_status": self.http_status,
            "error": self.error,
            "at": self.at.isoformat(),
        }


@dataclass
class FakeMessage:
    """A message the fake accepted, as it stands now."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status_callback: str | None
    validity_period: int | None
    attempt: int | None
    status: str
    num_segments: int
    received_monotonic: (
        float  # time.monotonic() is system-wide on Linux: comparable across processes
    )
    received_at: datetime
    sender: str  # the From used on the air (a Messaging Service picks one from its pool)
    error_code: int | None = None
    sent_at: datetime | None = None
    updated_at: datetime | None = None
    callbacks: list[CallbackAttempt] = field(default_factory=list)

    def resource(self) -> dict[str, Any]:
        """The Message resource JSON, as Twilio returns it."""
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}"
        shown_from = self.from_ if self.status in ("accepted", "queued") else self.sender
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": _rfc2822(self.received_at),
            "date_sent": _rfc2822(self.sent_at),
            "date_updated": _rfc2822(self.updated_at or self.received_at),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": None,
            "from": shown_from,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(self.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {
                "media": f"{base}/Media.json",
                "feedback": f"{base}/Feedback.json",
            },
            "to": self.to,
            "uri": f"{base}.json",
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything the fake knows about the message, for `/_fake/messages`."""
        return {
            "sid": self.sid,
            "to": self.to,
            "from": self.from_,
            "sender": self.sender,
            "messaging_service_sid": self.messaging_service_sid,
            "body": self.body,
            "status": self.status,
            "error_code": self.error_code,
            "status_callback": self.status_callback,
            "validity_period": self.validity_period,
            "attempt": self.attempt,
            "num_segments": self.num_segments,
            "received_at": self.received_at.isoformat(),
            "received_monotonic": self.received_monotonic,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "callbacks": [c.to_dict() for c in self.callbacks],
        }


@dataclass(frozen=True)
class ApiCall:
    """One request to the Messages API and the HTTP status the fake answered."""

    at_monotonic: float
    method: str
    operation: Literal["create", "fetch", "list"]
    to: str | None
    http_status: int
    fault: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class InboundResult:
    """What our app answered to a simulated inbound SMS."""

    message_sid: str
    params: dict[str, str]
    http_status: int | None
    body: str
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


# What a phone call does when the fake places it (per number; `call_behaviour`).
CALL_BEHAVIOURS = ("press1", "press2", "no_answer", "busy", "voicemail", "failed", "hang_up")


@dataclass
class FakePhoneCall:
    """A call created through the Calls API, and what the simulated phone did with it."""

    sid: str
    account_sid: str
    to: str
    sender: str
    url: str
    status_callback: str | None
    behaviour: str
    status: str = "queued"
    answered_by: str | None = None
    twiml: str | None = None
    digits: str | None = None
    gather_reply: str | None = None
    callbacks: list[tuple[str, int | None]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": self.sender,
            "status": self.status,
            "answered_by": self.answered_by,
            "behaviour": self.behaviour,
            "twiml": self.twiml,
            "digits": self.digits,
            "gather_reply": self.gather_reply,
            "callbacks": [{"status": st, "http": code} for st, code in self.callbacks],
            "api_version": API_VERSION,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json",
        }


@dataclass
class _Fault:
    mode: str
    remaining: int | None
    until: float | None
    seconds: float
    after_accept: bool
    retry_after: int | None
    status: int

    def is_live(self, now: float) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        return self.until is None or now < self.until

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "remaining": self.remaining,
            "seconds_left": None if self.until is None else max(0.0, self.until - now),
            "seconds": self.seconds,
            "after_accept": self.after_accept,
            "retry_after": self.retry_after,
            "status": self.status,
        }


class _BadControl(ValueError):
    """A control request the fake cannot act on (answered 400)."""


def _error_payload(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def twilio_error(status: int, code: int, message: str) -> Response:
    """A Twilio-style error answer."""
    payload = _error_payload(status, code, message)
    response = Response(json.dumps(payload), status=status, mimetype="application/json")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return response


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


class _QuietHandler(WSGIRequestHandler):
    # HTTP/1.0 closes the connection after each answer, so stopping never waits on an idle
    # keep-alive connection and a client never reuses a socket the fake is about to close.
    protocol_version = "HTTP/1.0"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Request lines are noise in test output; errors still go through log_error.
        pass


class _Server(ThreadedWSGIServer):
    # Non-daemon handler threads that server_close() joins: after stop() nothing is left running.
    daemon_threads = False
    block_on_close = True

    def __init__(self, host: str, port: int, app: Any) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(host, port, app, handler=_QuietHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def abort_open_connections(self) -> None:
        """Shut down sockets still being served, so their handler threads end."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)


class FakeTwilio:
    """The fake server: a WSGI app plus, once started, a threaded HTTP server on `base_url`."""

    def __init__(
        self,
        *,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        callbacks_enabled: bool = True,
        callback_delay: float = 0.05,
        callback_timeout: float = 5.0,
        callback_retries: int = 1,
        default_from: str = DEFAULT_FROM,
        messaging_service_sid: str | None = None,
        auto_opt_out: bool = True,
        latency: float = 0.0,
        deliver_via: str | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.port = port
        self.callbacks_enabled = callbacks_enabled
        self.callback_delay = callback_delay
        self.callback_timeout = callback_timeout
        # Twilio retries a webhook once when the connection fails (its default "ct" policy).
        self.callback_retries = callback_retries
        self.default_from = default_from
        self.messaging_service_sid = messaging_service_sid
        # Inbound STOP/START update the unsubscribed set and add OptOutType, as Twilio does.
        self.auto_opt_out = auto_opt_out
        # Seconds each message creation takes to answer, as Twilio's API does (~0.1-0.3 s): the
        # message is created, and stamped `received_at`, at the end of it, as the 201 goes back.
        self.latency = latency
        # Webhooks are signed for the URL the app gave (its public https:// one) but sent to
        # this origin instead (http://127.0.0.1:PORT): what a TLS-terminating proxy in front of
        # the app does. None: sent where the URL says.
        self.deliver_via = urlsplit(deliver_via) if deliver_via else None

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._messages: dict[str, FakeMessage] = {}
        self._calls: list[ApiCall] = []
        self._inbound: list[InboundResult] = []
        self._faults: list[_Fault] = []
        self._unsubscribed: set[str] = set()
        self._invalid: set[str] = set()
        self._undeliverable: dict[str, tuple[str, int]] = {}
        # Phone calls (the Calls API) and what each number does when called (default: press 1).
        self._phone_calls: dict[str, FakePhoneCall] = {}
        self._call_behaviour: dict[str, str] = {}
        self.default_call_behaviour = "press1"

        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._jobs: list[tuple[float, int, str, str]] = []
        self._job_seq = itertools.count()
        self._scheduler: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._url_map = Map(
            [
                Rule(f"/{API_VERSION}/Accounts/<account>/Messages.json", endpoint="messages"),
                Rule(f"/{API_VERSION}/Accounts/<account>/Messages/<sid>.json", endpoint="fetch"),
                Rule(f"/{API_VERSION}/Accounts/<account>/Calls.json", endpoint="voice_calls"),
                Rule("/_fake/voice", endpoint="control_voice"),
                Rule("/_fake/", endpoint="page"),
                Rule("/_fake/health", endpoint="health"),
                Rule("/_fake/messages", endpoint="control_messages"),
                Rule("/_fake/messages/<sid>", endpoint="control_message"),
                Rule("/_fake/messages/<sid>/status", endpoint="control_status"),
                Rule("/_fake/faults", endpoint="control_faults"),
                Rule("/_fake/settings", endpoint="control_settings"),
                Rule("/_fake/inbound", endpoint="control_inbound"),
                Rule("/_fake/calls", endpoint="control_calls"),
                Rule("/_fake/reset", endpoint="control_reset"),
            ],
            strict_slashes=False,
        )

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """http://host:port of the running server."""
        if self._server is None:
            raise RuntimeError("FakeTwilio is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> FakeTwilio:
        """Bind and serve in background threads; returns self."""
        if self._server is not None:
            raise RuntimeError("FakeTwilio is already started")
        self._stopping.clear()
        try:
            server = _Server(self.host, self.port, self.wsgi_app)
        except SystemExit as exc:
            # werkzeug exits the process when the port is taken; a library must raise instead.
            raise OSError(f"cannot listen on {self.host}:{self.port}") from exc
        self._server = server
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fake-twilio-hook")
        self._scheduler = threading.Thread(
            target=self._run_jobs, name="fake-twilio-scheduler", daemon=True
        )
        self._scheduler.start()
        self._serve_thread = threading.Thread(
            target=server.serve_forever,
            # stop() waits up to one poll interval; tests start and stop dozens of fakes.
            kwargs={"poll_interval": 0.01},
            name="fake-twilio-server",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake hung requests, drop pending callbacks and join every thread."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        server.shutdown()
        server.abort_open_connections()
        server.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout=10)
        if self._scheduler is not None:
            self._scheduler.join(timeout=10)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._jobs.clear()
        self._server = None
        self._serve_thread = self._scheduler = None
        self._executor = None

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- inspection ------------------------------------------------------------------------

    def messages(self, to: str | None = None) -> list[FakeMessage]:
        """Snapshots of the accepted messages, oldest first, optionally only to one number."""
        with self._lock:
            return [
                dataclasses.replace(m, callbacks=list(m.callbacks))
                for m in self._messages.values()
                if to is None or m.to == to
            ]

    def message(self, sid: str) -> FakeMessage | None:
        """A snapshot of one message."""
        with self._lock:
            m = self._messages.get(sid)
            return dataclasses.replace(m, callbacks=list(m.callbacks)) if m else None

    def api_calls(self) -> list[ApiCall]:
        """Every Messages API request so far, with the status answered (faults included)."""
        with self._lock:
            return list(self._calls)

    def inbound(self) -> list[InboundResult]:
        """Every simulated inbound SMS posted so far."""
        with self._lock:
            return list(self._inbound)

    def clear_messages(self) -> None:
        """Forget messages, API calls and inbound records (faults and settings stay)."""
        with self._lock:
            self._messages.clear()
            self._calls.clear()
            self._inbound.clear()
            self._changed.notify_all()

    def reset(self) -> None:
        """Forget everything, faults included."""
        self.clear_messages()
        self.clear_faults()
        with self._lock:
            self._phone_calls.clear()
            self._call_behaviour.clear()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block until predicate() is true; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping.is_set():
                    raise TimeoutError("FakeTwilio: condition not met in time")
                # Woken on every change; the short cap also catches time-based conditions.
                self._changed.wait(min(left, 0.05))

    def wait_for_messages(
        self, count: int, *, to: str | None = None, timeout: float = 5.0
    ) -> list[FakeMessage]:
        """Wait until at least `count` messages (to `to`, if given) were accepted."""
        self.wait_until(lambda: len(self._matching(to)) >= count, timeout)
        return self.messages(to)

    def wait_for_callbacks(self, sid: str, count: int, timeout: float = 5.0) -> FakeMessage:
        """Wait until `count` status callbacks for the message were attempted."""

        def done() -> bool:
            m = self._messages.get(sid)
            return m is not None and len(m.callbacks) >= count

        self.wait_until(done, timeout)
        found = self.message(sid)
        assert found is not None
        return found

    def _matching(self, to: str | None) -> list[FakeMessage]:
        return [m for m in self._messages.values() if to is None or m.to == to]

    # ---- faults ----------------------------------------------------------------------------

    def add_fault(
        self,
        mode: FaultMode,
        *,
        count: int | None = None,
        duration: float | None = None,
        seconds: float = 0.0,
        after_accept: bool = False,
        retry_after: int | None = None,
        status: int = 500,
    ) -> None:
        """Misbehave on the next `count` creations and/or for `duration` s (default: once)."""
        if mode not in _FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        if count is None and duration is None:
            count = 1
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        if mode == "error" and not 500 <= status <= 599:
            raise ValueError("an error fault answers a 5xx status")
        until = None if duration is None else time.monotonic() + duration
        fault = _Fault(mode, count, until, float(seconds), after_accept, retry_after, status)
        with self._lock:
            self._faults.append(fault)

    def fail_next(self, count: int = 1, *, status: int = 500) -> None:
        """Answer a 5xx to the next `count` message creations."""
        self.add_fault("error", count=count, status=status)

    def fail_for(self, duration: float, *, status: int = 500) -> None:
        """Answer a 5xx to every message creation for `duration` seconds."""
        self.add_fault("error", duration=duration, status=status)

    def throttle_next(self, count: int = 1, *, retry_after: int | None = None) -> None:
        """Answer 429 (Twilio 20429) to the next `count` message creations."""
        self.add_fault("throttle", count=count, retry_after=retry_after)

    def throttle_for(self, duration: float, *, retry_after: int | None = None) -> None:
        """Answer 429 to every message creation for `duration` seconds."""
        self.add_fault("throttle", duration=duration, retry_after=retry_after)

    def hang_next(self, seconds: float, *, count: int = 1, after_accept: bool = False) -> None:
        """Hold the next `count` creations for `seconds` (see `add_fault` for `after_accept`)."""
        self.add_fault("hang", count=count, seconds=seconds, after_accept=after_accept)

    def hang_for(self, duration: float, seconds: float, *, after_accept: bool = False) -> None:
        """Hold every creation for `seconds` during the next `duration` seconds."""
        self.add_fault("hang", duration=duration, seconds=seconds, after_accept=after_accept)

    def unsubscribe(self, to: str, *, enabled: bool = True) -> None:
        """Answer 21610 (unsubscribed recipient) for this number until told otherwise."""
        with self._lock:
            (self._unsubscribed.add if enabled else self._unsubscribed.discard)(to)

    def reject_number(self, to: str, *, enabled: bool = True) -> None:
        """Answer 21211 (invalid 'To' number) for this number until told otherwise."""
        with self._lock:
            (self._invalid.add if enabled else self._invalid.discard)(to)

    def fail_delivery(
        self, to: str, *, status: str = "undelivered", error_code: int = 30003, enabled: bool = True
    ) -> None:
        """Accept messages to this number but end them `undelivered`/`failed` with `error_code`."""
        if status not in ("undelivered", "failed"):
            raise ValueError("delivery failure status is 'undelivered' or 'failed'")
        with self._lock:
            if enabled:
                self._undeliverable[to] = (status, error_code)
            else:
                self._undeliverable.pop(to, None)

    def clear_faults(self) -> None:
        """Remove every fault and number rule."""
        with self._lock:
            self._faults.clear()
            self._unsubscribed.clear()
            self._invalid.clear()
            self._undeliverable.clear()

    def faults(self) -> dict[str, Any]:
        """The current faults and number rules, JSON-ready."""
        now = time.monotonic()
        with self._lock:
            return {
                "faults": [f.describe(now) for f in self._faults if f.is_live(now)],
                "unsubscribed": sorted(self._unsubscribed),
                "invalid_numbers": sorted(self._invalid),
                "undeliverable": {
                    to: {"status": s, "error_code": c} for to, (s, c) in self._undeliverable.items()
                },
            }

    def _take_fault(self) -> _Fault | None:
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if f.is_live(now)]
            if not self._faults:
                return None
            fault = self._faults[0]
            if fault.remaining is not None:
                fault.remaining -= 1
            self._changed.notify_all()
            return fault

    # ---- webhooks out ----------------------------------------------------------------------

    def _post_form(self, url: str, params: Mapping[str, str]) -> tuple[int | None, str, str | None]:
        if urlsplit(url).scheme not in ("http", "https"):
            return None, "", "not an http(s) URL"
        data = urlencode(params).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "User-Agent": "TwilioProxy/1.1",
            SIGNATURE_HEADER: compute_signature(self.auth_token, url, params),
            # The same token on every retry of one webhook, as Twilio sends.
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        error = None
        if self.deliver_via is not None:
            parts = urlsplit(url)
            via = self.deliver_via
            url = f"{via.scheme}://{via.netloc}{parts.path}" + (
                f"?{parts.query}" if parts.query else ""
            )
        for _ in range(1 + max(0, self.callback_retries)):
            # The scheme is checked above; the URL is the one our app asked to be called on.
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310
            try:
                with self._opener.open(request, timeout=self.callback_timeout) as reply:
                    return reply.status, reply.read().decode("utf-8", "replace"), None
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode("utf-8", "replace"), None
            except (urllib.error.URLError, OSError) as exc:
                error = str(getattr(exc, "reason", exc))
                if self._stopping.is_set():
                    break
        return None, "", error

    def _callback_params(
        self, m: FakeMessage, status: str, error_code: int | None
    ) -> dict[str, str]:
        params = {
            "MessageSid": m.sid,
            "SmsSid": m.sid,
            "AccountSid": m.account_sid,
            "From": m.sender,
            "To": m.to,
            "MessageStatus": status,
            "SmsStatus": status,
            "ApiVersion": API_VERSION,
        }
        if m.messaging_service_sid:
            params["MessagingServiceSid"] = m.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return params

    def post_status_callback(
        self, sid: str, status: str, *, error_code: int | None = None, url: str | None = None
    ) -> CallbackAttempt:
        """Post one signed status callback now (a duplicate, a late one); the status stays."""
        with self._lock:
            m = self._messages.get(sid)
            if m is None:
                raise KeyError(sid)
            target = url or m.status_callback
            if not target:
                raise ValueError("the message has no StatusCallback; pass url=")
            params = self._callback_params(m, status, error_code)
        return self._deliver_callback(sid, target, params)

    def _deliver_callback(self, sid: str, url: str, params: dict[str, str]) -> CallbackAttempt:
        http_status, _, error = self._post_form(url, params)
        attempt = CallbackAttempt(url, params, http_status, error, _now())
        with self._lock:
            m = self._messages.get(sid)
            if m is not None:
                m.callbacks.append(attempt)
            self._changed.notify_all()
        return attempt

    def send_inbound(
        self,
        url: str,
        from_: str,
        to: str,
        body: str,
        extra_params: Mapping[str, str] | None = None,
    ) -> InboundResult:
        """POST a correctly signed inbound-SMS webhook to our app, as Twilio would."""
        sid = _new_sid()
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": str(max(1, count_segments(body).segments)),
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        if self.messaging_service_sid:
            params["MessagingServiceSid"] = self.messaging_service_sid
        if self.auto_opt_out:
            keyword = body.strip().upper()
            kind = next((k for k, words in _OPT_OUT_KEYWORDS.items() if keyword in words), None)
            if kind is not None:
                params["OptOutType"] = kind
                # Twilio blocks further sends to a number that texted STOP, until START.
                if kind == "STOP":
                    self.unsubscribe(from_)
                elif kind == "START":
                    self.unsubscribe(from_, enabled=False)
        params.update(extra_params or {})
        http_status, text, error = self._post_form(url, params)
        result = InboundResult(sid, params, http_status, text, error)
        with self._lock:
            self._inbound.append(result)
            self._changed.notify_all()
        return result

    # ---- delivery simulation ---------------------------------------------------------------

    def _schedule(self, delay: float, sid: str, status: str) -> None:
        with self._changed:
            if self._stopping.is_set():
                return
            heapq.heappush(self._jobs, (time.monotonic() + delay, next(self._job_seq), sid, status))
            self._changed.notify_all()

    def _run_jobs(self) -> None:
        while True:
            with self._changed:
                while not self._stopping.is_set():
                    now = time.monotonic()
                    if self._jobs and self._jobs[0][0] <= now:
                        break
                    self._changed.wait(self._jobs[0][0] - now if self._jobs else None)
                if self._stopping.is_set():
                    return
                _, _, sid, status = heapq.heappop(self._jobs)
            executor = self._executor
            if executor is None:
                return
            try:
                executor.submit(self._advance, sid, status)
            except RuntimeError:
                return  # the executor is shutting down

    def _advance(self, sid: str, status: str) -> None:
        with self._lock:
            m = self._messages.get(sid)
            if m is None or self._stopping.is_set():
                return
            error_code = None
            if status == "final":
                status, error_code = self._undeliverable.get(m.to, ("delivered", None))
            m.status = status
            m.error_code = error_code
            m.updated_at = _now()
            if status == "sent":
                m.sent_at = m.updated_at
            url = m.status_callback if self.callbacks_enabled else None
            params = self._callback_params(m, status, error_code)
            self._changed.notify_all()
        if url:
            self._deliver_callback(sid, url, params)
        if status not in _FINAL_STATUSES:
            # Scheduled only now, so "sent" always reaches the app before the final state.
            self._schedule(self.callback_delay, sid, "final")

    # ---- the WSGI app ----------------------------------------------------------------------

    # ---- the Calls API (Programmable Voice) ------------------------------------------------

    def set_call_behaviour(self, to: str, behaviour: str | None) -> None:
        """What `to` does when called: press1 / press2 (answers, presses that key), no_answer,
        busy, voicemail (a machine answers), failed, hang_up (answers, presses nothing); None:
        the default (`default_call_behaviour`, press1)."""
        if behaviour is not None and behaviour not in CALL_BEHAVIOURS:
            raise _BadControl(f"behaviour must be one of {', '.join(CALL_BEHAVIOURS)}")
        with self._lock:
            if behaviour is None:
                self._call_behaviour.pop(to, None)
            else:
                self._call_behaviour[to] = behaviour

    def phone_calls(self, to: str | None = None) -> list[FakePhoneCall]:
        with self._lock:
            return [c for c in self._phone_calls.values() if to is None or c.to == to]

    def wait_for_phone_call(self, to: str, status: str, timeout: float = 5.0) -> FakePhoneCall:
        """Wait until a call to `to` reached `status` (completed, no-answer, busy, failed)."""

        def done() -> bool:
            return any(c.status == status for c in self.phone_calls(to))

        self.wait_until(done, timeout)
        return next(c for c in self.phone_calls(to) if c.status == status)

    def _ep_voice_calls(self, request: Request, account: str) -> Response:
        form = request.form
        to = (form.get("To") or "").strip()
        if request.method != "POST":
            return twilio_error(405, 20004, "Method not allowed")
        if not self._authorized(request, account):
            self._log_call("POST", "create", to, 401)
            return twilio_error(401, 20003, "Authenticate")
        sender = (form.get("From") or "").strip()
        url = (form.get("Url") or "").strip()
        if not _E164.match(to):
            return _json(_error_payload(400, 21211, f"The 'To' number {to} is not valid."), 400)
        if not sender:
            return _json(_error_payload(400, 21603, "A 'From' phone number is required."), 400)
        if not url:
            return _json(_error_payload(400, 21205, "Url parameter is required."), 400)
        with self._lock:
            call = FakePhoneCall(
                sid=_new_sid("CA"),
                account_sid=account,
                to=to,
                sender=sender,
                url=url,
                status_callback=(form.get("StatusCallback") or "").strip() or None,
                behaviour=self._call_behaviour.get(to, self.default_call_behaviour),
            )
            self._phone_calls[call.sid] = call
            executor = self._executor
        self._log_call("POST", "create", to, 201)
        if executor is not None and self.callbacks_enabled:
            executor.submit(self._run_phone_call, call.sid)
        return _json(call.to_dict(), 201)

    def _run_phone_call(self, sid: str) -> None:
        """Play the call: fetch its TwiML as Twilio does, press the number's key on its Gather,
        then post the final status."""
        with self._lock:
            call = self._phone_calls[sid]
        self._stopping.wait(self.callback_delay)
        base = {
            "CallSid": call.sid,
            "AccountSid": call.account_sid,
            "From": call.sender,
            "To": call.to,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
        }
        behaviour = call.behaviour
        final = {"no_answer": "no-answer", "busy": "busy", "failed": "failed"}.get(behaviour)
        if final is None:
            answered_by = "machine_end_beep" if behaviour == "voicemail" else "human"
            with self._lock:
                call.status, call.answered_by = "in-progress", answered_by
            _, body, _ = self._post_form(
                call.url, {**base, "CallStatus": "in-progress", "AnsweredBy": answered_by}
            )
            with self._lock:
                call.twiml = body
            action = re.search(r'<Gather[^>]*action="([^"]+)"', body or "")
            if behaviour in ("press1", "press2") and action:
                digits = behaviour[-1]
                _, reply, _ = self._post_form(
                    html.unescape(action.group(1)),
                    {**base, "CallStatus": "in-progress", "Digits": digits},
                )
                with self._lock:
                    call.digits, call.gather_reply = digits, reply
            final = "completed"
        with self._lock:
            call.status = final
            self._changed.notify_all()
        if call.status_callback:
            params = {**base, "CallStatus": final}
            if call.answered_by:
                params["AnsweredBy"] = call.answered_by
            code, _, _ = self._post_form(call.status_callback, params)
            with self._lock:
                call.callbacks.append((final, code))
                self._changed.notify_all()

    def _ep_control_voice(self, request: Request) -> Response:
        """GET: every phone call; POST {"to": ..., "behaviour": ...}: what a number does."""
        if request.method == "POST":
            payload = request.get_json(silent=True) or {}
            to = str(payload.get("to") or "")
            if not _E164.match(to):
                raise _BadControl("to must be an E.164 number")
            self.set_call_behaviour(to, payload.get("behaviour"))
            return _json({"to": to, "behaviour": payload.get("behaviour")})
        return _json([c.to_dict() for c in self.phone_calls()])

    def wsgi_app(self, environ: dict[str, Any], start_response: Any) -> Any:
        """WSGI entry point (also usable with werkzeug's test Client, without a socket)."""
        request = Request(environ)
        adapter = self._url_map.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
            response = getattr(self, f"_ep_{endpoint}")(request, **args)
        except NotFound:
            response = twilio_error(404, 20404, "The requested resource was not found")
        except HTTPException as exc:
            response = exc.get_response(environ)
        except _BadControl as exc:
            response = _json({"error": str(exc)}, 400)
        return response(environ, start_response)

    def _authorized(self, request: Request, account: str) -> bool:
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return False
        return bool(
            secrets.compare_digest(auth.username or "", self.account_sid)
            and secrets.compare_digest(auth.password or "", self.auth_token)
            and account == self.account_sid
        )

    def _log_call(
        self,
        method: str,
        op: Literal["create", "fetch", "list"],
        to: str | None,
        status: int,
        fault: str | None = None,
    ) -> None:
        with self._lock:
            self._calls.append(ApiCall(time.monotonic(), method, op, to, status, fault))
            self._changed.notify_all()

    def _ep_messages(self, request: Request, account: str) -> Response:
        if request.method == "GET":
            return self._list(request, account)
        if request.method != "POST":
            return twilio_error(405, 20004, "Method not allowed")
        return self._create(request, account)

    def _create(self, request: Request, account: str) -> Response:
        form = request.form
        to = form.get("To")
        if not self._authorized(request, account):
            self._log_call("POST", "create", to, 401)
            return twilio_error(401, 20003, "Authenticate")
        if self.latency > 0:
            self._stopping.wait(self.latency)
        fault = self._take_fault()
        if fault is not None and not (fault.mode == "hang" and fault.after_accept):
            if fault.mode == "error":
                self._log_call("POST", "create", to, fault.status, "error")
                return twilio_error(fault.status, 20500, "An internal server error has occurred")
            if fault.mode == "throttle":
                self._log_call("POST", "create", to, 429, "throttle")
                response = twilio_error(429, 20429, "Too Many Requests")
                if fault.retry_after is not None:
                    response.headers["Retry-After"] = str(fault.retry_after)
                return response
            self._stopping.wait(fault.seconds)
            if fault.mode == "hang":
                # The request never reached Twilio's core: nothing is recorded.
                self._log_call("POST", "create", to, 503, "hang")
                return twilio_error(503, 20503, "Service unavailable")
        status, payload = self._accept(form, account)
        if status == 201 and fault is not None and fault.mode == "hang":
            # Accepted (and its callbacks scheduled) before the client gets its answer, if ever.
            self._stopping.wait(fault.seconds)
        self._log_call("POST", "create", to, status, fault.mode if fault else None)
        return _json(payload, status)

    def _accept(self, form: Mapping[str, str], account: str) -> tuple[int, dict[str, Any]]:
        to = (form.get("To") or "").strip()
        body = form.get("Body") or ""
        from_ = (form.get("From") or "").strip() or None
        service = (form.get("MessagingServiceSid") or "").strip() or None

        def error(code: int, message: str) -> tuple[int, dict[str, Any]]:
            return 400, _error_payload(400, code, message)

        if not to:
            return error(21604, "A 'To' phone number is required.")
        if not body:
            return error(21602, "Message body is required.")
        if from_ is None and service is None:
            return error(21603, "A 'From' phone number is required.")
        if len(body) > MAX_BODY_CHARS:
            return error(21617, "The concatenated message body exceeds the 1600 character limit.")
        with self._lock:
            if not _E164.match(to) or to in self._invalid:
                return error(21211, f"The 'To' number {to} is not a valid phone number.")
            if to in self._unsubscribed:
                return error(21610, "Attempt to send to unsubscribed recipient")
            now = _now()
            message = FakeMessage(
                sid=_new_sid(),
                account_sid=account,
                to=to,
                from_=from_,
                messaging_service_sid=service,
                body=body,
                status_callback=form.get("StatusCallback") or None,
                validity_period=_int_or_none(form.get("ValidityPeriod")),
                attempt=_int_or_none(form.get("Attempt")),
                status="accepted" if service else "queued",
                num_segments=max(1, count_segments(body).segments),
                received_monotonic=time.monotonic(),
                received_at=now,
                sender=from_ or self.default_from,
            )
            self._messages[message.sid] = message
            self._changed.notify_all()
            payload = message.resource()
        self._schedule(self.callback_delay, message.sid, "sent")
        return 201, payload

    def _ep_fetch(self, request: Request, account: str, sid: str) -> Response:
        if not self._authorized(request, account):
            self._log_call(request.method, "fetch", None, 401)
            return twilio_error(401, 20003, "Authenticate")
        with self._lock:
            m = self._messages.get(sid)
            payload = m.resource() if m else None
        self._log_call(request.method, "fetch", None, 200 if payload else 404)
        if payload is None:
            return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        return _json(payload)

    def _list(self, request: Request, account: str) -> Response:
        if not self._authorized(request, account):
            self._log_call("GET", "list", None, 401)
            return twilio_error(401, 20003, "Authenticate")
        args = request.args
        to, from_ = args.get("To"), args.get("From")
        page_size = max(1, min(1000, _int_or_none(args.get("PageSize")) or 50))
        page = max(0, _int_or_none(args.get("Page")) or 0)
        with self._lock:
            try:
                found = [
                    m
                    for m in reversed(list(self._messages.values()))  # Twilio: newest first
                    if (to is None or m.to == to)
                    and (from_ is None or m.sender == from_)
                    and _date_sent_matches(m.sent_at, args)
                ]
            except ValueError:
                return twilio_error(400, 20001, "Invalid DateSent filter")
            chunk = [m.resource() for m in found[page * page_size : (page + 1) * page_size]]
        self._log_call("GET", "list", to, 200)

        def page_uri(number: int) -> str:
            query = {k: v for k, v in args.items() if k not in ("Page", "PageSize", "PageToken")}
            query.update({"PageSize": str(page_size), "Page": str(number)})
            return f"{request.path}?{urlencode(query)}"

        has_next = (page + 1) * page_size < len(found)
        return _json(
            {
                "messages": chunk,
                "first_page_uri": page_uri(0),
                "next_page_uri": page_uri(page + 1) if has_next else None,
                "previous_page_uri": page_uri(page - 1) if page > 0 else None,
                "page": page,
                "page_size": page_size,
                "start": page * page_size,
                "end": page * page_size + max(0, len(chunk) - 1),
                "uri": page_uri(page),
            }
        )

    # ---- control endpoints -----------------------------------------------------------------

    def _ep_health(self, request: Request) -> Response:
        return _json({"ok": True, "account_sid": self.account_sid})

    def _ep_control_messages(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear_messages()
            return _json({"cleared": True})
        return _json([m.to_dict() for m in self.messages(request.args.get("to"))])

    def _ep_control_message(self, request: Request, sid: str) -> Response:
        m = self.message(sid)
        return _json(m.to_dict()) if m else _json({"error": "no such message"}, 404)

    def _ep_control_status(self, request: Request, sid: str) -> Response:
        if request.method != "POST":
            return _json({"error": "POST only"}, 405)
        data = _json_body(request)
        status = data.get("status")
        if not isinstance(status, str):
            raise _BadControl("'status' is required")
        try:
            attempt = self.post_status_callback(
                sid, status, error_code=_opt_int(data, "error_code"), url=data.get("url")
            )
        except KeyError:
            return _json({"error": "no such message"}, 404)
        except ValueError as exc:
            raise _BadControl(str(exc)) from exc
        return _json(attempt.to_dict())

    def _ep_control_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear_faults()
        elif request.method == "POST":
            self._apply_fault(_json_body(request))
        return _json(self.faults())

    def _apply_fault(self, data: dict[str, Any]) -> None:
        mode = data.get("mode")
        enabled = bool(data.get("enabled", True))
        to = data.get("to")
        try:
            if mode in ("unsubscribed", "invalid_number", "undeliverable"):
                if not isinstance(to, str) or not to:
                    raise _BadControl(f"mode {mode!r} needs 'to'")
                if mode == "unsubscribed":
                    self.unsubscribe(to, enabled=enabled)
                elif mode == "invalid_number":
                    self.reject_number(to, enabled=enabled)
                else:
                    self.fail_delivery(
                        to,
                        status=str(data.get("status", "undelivered")),
                        error_code=_opt_int(data, "error_code") or 30003,
                        enabled=enabled,
                    )
                return
            if mode not in _FAULT_MODES:
                raise _BadControl(
                    "mode is one of error, throttle, hang, slow, unsubscribed, invalid_number, "
                    "undeliverable"
                )
            self.add_fault(
                mode,
                count=_opt_int(data, "count"),
                duration=_opt_float(data, "duration"),
                seconds=_opt_float(data, "seconds") or 0.0,
                after_accept=bool(data.get("after_accept", False)),
                retry_after=_opt_int(data, "retry_after"),
                status=_opt_int(data, "status") or 500,
            )
        except ValueError as exc:
            raise _BadControl(str(exc)) from exc

    def _ep_control_settings(self, request: Request) -> Response:
        if request.method == "POST":
            data = _json_body(request)
            if "callbacks_enabled" in data:
                self.callbacks_enabled = bool(data["callbacks_enabled"])
            if "callback_delay" in data:
                delay = _opt_float(data, "callback_delay")
                if delay is None or delay < 0:
                    raise _BadControl("callback_delay must be a number >= 0")
                self.callback_delay = delay
            if "auto_opt_out" in data:
                self.auto_opt_out = bool(data["auto_opt_out"])
            if "latency" in data:
                latency = _opt_float(data, "latency")
                if latency is None or latency < 0:
                    raise _BadControl("latency must be a number >= 0")
                self.latency = latency
        return _json(
            {
                "callbacks_enabled": self.callbacks_enabled,
                "callback_delay": self.callback_delay,
                "auto_opt_out": self.auto_opt_out,
                "latency": self.latency,
            }
        )

    def _ep_control_inbound(self, request: Request) -> Response:
        if request.method != "POST":
            return _json([r.to_dict() for r in self.inbound()])
        data = _json_body(request)
        missing = [k for k in ("url", "from", "to", "body") if not isinstance(data.get(k), str)]
        if missing:
            raise _BadControl(f"missing: {', '.join(missing)}")
        extra = data.get("extra") or {}
        if not isinstance(extra, dict):
            raise _BadControl("'extra' must be an object")
        result = self.send_inbound(
            data["url"],
            data["from"],
            data["to"],
            data["body"],
            {k: str(v) for k, v in extra.items()},
        )
        return _json(result.to_dict(), 200 if result.http_status is not None else 502)

    def _ep_control_calls(self, request: Request) -> Response:
        return _json([c.to_dict() for c in self.api_calls()])

    def _ep_control_reset(self, request: Request) -> Response:
        if request.method != "POST":
            return _json({"error": "POST only"}, 405)
        self.reset()
        return _json({"reset": True})

    def _ep_page(self, request: Request) -> Response:
        messages = self.messages()
        rows = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(m.received_at.strftime("%Y-%m-%d %H:%M:%S")),
                html.escape(m.to),
                html.escape(m.body),
                html.escape(m.status + (f" ({m.error_code})" if m.error_code else "")),
                m.num_segments,
                html.escape(m.sid),
            )
            for m in reversed(messages)
        )
        inbound = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(r.params.get("From", "")),
                html.escape(r.params.get("To", "")),
                html.escape(r.params.get("Body", "")),
                html.escape(str(r.http_status if r.http_status is not None else r.error)),
            )
            for r in reversed(self.inbound())
        )
        faults = html.escape(json.dumps(self.faults()))
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="3">
<title>Fake Twilio</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5rem; }}
table {{ border-collapse: collapse; width: 100%; margin-bottom: 2rem; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; }}
td:nth-child(3) {{ white-space: pre-wrap; }}
th {{ background: #f2f2f2; }}
code {{ font-size: 12px; }}
</style></head><body>
<h1>Fake Twilio</h1>
<p>Account <code>{html.escape(self.account_sid)}</code>. Faults: <code>{faults}</code></p>
<h2>Outbound messages ({len(messages)})</h2>
<table><tr><th>Received (UTC)</th><th>To</th><th>Body</th><th>Status</th><th>Segments</th>
<th>SID</th></tr>{rows}</table>
<h2>Inbound sent to the app</h2>
<table><tr><th>From</th><th>To</th><th>Body</th><th>App answer</th></tr>{inbound}</table>
</body></html>"""
        return Response(page, mimetype="text/html")


def _int_or_none(raw: str | None) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _BadControl(f"'{key}' must be an integer")
    try:
        return int(value)
    except ValueError as exc:
        raise _BadControl(f"'{key}' must be an integer") from exc


def _opt_float(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _BadControl(f"'{key}' must be a number")
    try:
        return float(value)
    except ValueError as exc:
        raise _BadControl(f"'{key}' must be a number") from exc


def _json_body(request: Request) -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise _BadControl("send a JSON object")
    return data


def _date_sent_matches(sent_at: datetime | None, args: Mapping[str, str]) -> bool:
    """Apply Twilio's DateSent / DateSent< / DateSent> filters (ValueError on a bad value)."""
    for key, op in (("DateSent", "eq"), ("DateSent<", "le"), ("DateSent>", "ge")):
        raw = args.get(key)
        if raw is None:
            continue
        # Twilio filters on the sent date; a message still queued has none and never matches.
        if sent_at is None:
            return False
        if len(raw) == 10:
            ok = _compare(op, sent_at.date(), date.fromisoformat(raw))
        else:
            bound = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            ok = _compare(op, sent_at, bound if bound.tzinfo else bound.replace(tzinfo=UTC))
        if not ok:
            return False
    return True


def _compare(op: str, value: date, bound: date) -> bool:
    if op == "eq":
        return value == bound
    return value <= bound if op == "le" else value >= bound


def main(argv: list[str] | None = None) -> int:
    """Run the fake Twilio server until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m notifications.fake_twilio", description="Fake Twilio Messages API"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--account-sid", default=os.environ.get("TWILIO_ACCOUNT_SID") or DEFAULT_ACCOUNT_SID
    )
    parser.add_argument(
        "--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN") or DEFAULT_AUTH_TOKEN
    )
    parser.add_argument(
        "--callback-delay",
        type=float,
        default=0.5,
        help="seconds before 'sent' and again before the final status (default 0.5)",
    )
    parser.add_argument("--no-callbacks", action="store_true", help="never post status callbacks")
    parser.add_argument("--default-from", default=DEFAULT_FROM)
    parser.add_argument("--messaging-service-sid", default=None)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds each message creation takes to answer (Twilio's API: ~0.1-0.3 s)",
    )
    parser.add_argument(
        "--deliver-via",
        default=None,
        help="send webhooks to this origin (http://127.0.0.1:PORT), signed for the URL the app "
        "gave: a TLS-terminating proxy's job, for an app whose PUBLIC_BASE_URL is https://",
    )
    args = parser.parse_args(argv)

    fake = FakeTwilio(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        host=args.host,
        port=args.port,
        callbacks_enabled=not args.no_callbacks,
        callback_delay=args.callback_delay,
        default_from=args.default_from,
        messaging_service_sid=args.messaging_service_sid,
        latency=args.latency,
        deliver_via=args.deliver_via,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    fake.start()
    print(f"fake Twilio on {fake.base_url} (messages: {fake.base_url}/_fake/)", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
