"""The provider interface the dispatcher talks to, its error taxonomy, and an in-memory double.

Nothing here imports twilio: the rest of the code base depends on these types only, so a
provider can be swapped (Twilio, the fake Twilio server, `RecordingProvider` in unit tests).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

# Twilio codes with a meaning the dispatcher acts on (https://www.twilio.com/docs/api/errors).
CODE_AUTHENTICATE = 20003
CODE_TOO_MANY_REQUESTS = 20429
CODE_INVALID_TO = 21211
CODE_UNSUBSCRIBED = 21610
CODE_QUEUE_OVERFLOW = 21611


@dataclass(frozen=True)
class SendReceipt:
    """What the provider said when it accepted a message."""

    sid: str
    status: str
    error_code: int | None = None


@dataclass(frozen=True)
class SentMessage:
    """A message as the provider's log shows it, for reconciling an ambiguous send."""

    sid: str
    to: str
    body: str
    status: str
    error_code: int | None
    created_at: datetime | None


class SmsSendError(Exception):
    """A send that did not yield a receipt.

    `str()` never contains the provider's message text, which can quote the phone number:
    exceptions end up in logs, and logs must not hold phone numbers.
    """

    def __init__(
        self,
        reason: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        provider_message: str | None = None,
    ) -> None:
        super().__init__(reason, code, http_status)
        self.reason = reason
        self.code = code
        self.http_status = http_status
        self.provider_message = provider_message

    def __str__(self) -> str:
        parts = [self.reason]
        if self.code is not None:
            parts.append(f"code {self.code}")
        if self.http_status is not None:
            parts.append(f"HTTP {self.http_status}")
        return ", ".join(parts)


class PermanentSendError(SmsSendError):
    """The provider refused this message for good (bad number, unsubscribed): never retry it."""

    @property
    def is_unsubscribed(self) -> bool:
        """True when the recipient opted out (Twilio 21610): record it, alert another channel."""
        return self.code == CODE_UNSUBSCRIBED

    @property
    def is_invalid_number(self) -> bool:
        """True when the number itself is unusable (Twilio 21211)."""
        return self.code == CODE_INVALID_TO


class TransientSendError(SmsSendError):
    """The send may succeed later (429, 5xx, timeout, network): retry with backoff.

    `may_have_been_accepted` is the dangerous part. False means the provider certainly did not
    take the message (connection refused, 429 "never processed"), so resending cannot duplicate.
    True means the request may have reached the provider (read timeout, dropped connection, 5xx):
    look the message up (our outbox id is in its StatusCallback URL) before any resend.
    """

    def __init__(
        self,
        reason: str,
        *,
        may_have_been_accepted: bool,
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        provider_message: str | None = None,
    ) -> None:
        super().__init__(
            reason, code=code, http_status=http_status, provider_message=provider_message
        )
        self.may_have_been_accepted = may_have_been_accepted
        self.retry_after = retry_after

    @property
    def is_ambiguous(self) -> bool:
        """Same as `may_have_been_accepted`: the outcome of the send is unknown."""
        return self.may_have_been_accepted

    def __str__(self) -> str:
        accepted = "may have been accepted" if self.may_have_been_accepted else "not accepted"
        return f"{super().__str__()} ({accepted})"


class ProviderConfigError(TransientSendError):
    """Our credentials or account were refused (401/403); nothing was sent.

    It is transient on purpose: the message is fine, and failing every queued reminder for good
    because a token was rotated badly would be worse than holding them until an operator fixes it.
    """


@runtime_checkable
class SmsProvider(Protocol):
    """Sends one SMS; raises `PermanentSendError` or `TransientSendError`, nothing else.

    `status_callback` is the URL the provider posts delivery states to (it should carry our
    outbox id, so a callback can be matched even if we never saw the receipt). `attempt` counts
    from 1 and is passed on to the provider; `validity_period` (seconds) bounds how long the
    provider may queue the message before dropping it. `sender` (a phone number, or a Messaging
    Service SID starting "MG") sends from another of the account's senders than the default
    (staff alerts have their own); None is the provider's default sender.
    """

    def send_sms(
        self,
        *,
        to: str,
        body: str,
        status_callback: str | None,
        attempt: int = 1,
        validity_period: int | None = None,
        sender: str | None = None,
    ) -> SendReceipt: ...


@runtime_checkable
class MessageLookup(Protocol):
    """Reads the provider's message log, to settle sends whose outcome is unknown."""

    def fetch_message(self, sid: str) -> SentMessage | None: ...

    def find_messages(self, *, to: str, created_after: datetime) -> list[SentMessage]: ...


@dataclass(frozen=True)
class RecordedSend:
    """One call to `RecordingProvider.send_sms`, whatever its outcome."""

    to: str
    body: str
    status_callback: str | None
    attempt: int
    validity_period: int | None
    sid: str | None  # None when the scripted outcome was an error that left nothing behind
    error: SmsSendError | None
    at: datetime
    sender: str | None = None  # None: the provider's default sender


@dataclass
class _Scripted:
    error: SmsSendError
    accepted: bool


@dataclass
class RecordingProvider:
    """In-memory provider for unit tests: records every call and raises scripted errors.

    `fail_next(err, accepted=True)` models the nasty case of a provider that took the message but
    whose answer never arrived: the call raises, yet the message is in `sent` and in the lookup.
    """

    calls: list[RecordedSend] = field(default_factory=list)
    # Phone calls placed (to, TwiML url, status callback, sid), in order.
    voice_calls: list[tuple[str, str, str, str]] = field(default_factory=list)
    _script: deque[_Scripted] = field(default_factory=deque, init=False, repr=False)
    _by_number: dict[str, SmsSendError] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _counter: itertools.count[int] = field(
        default_factory=lambda: itertools.count(1), init=False, repr=False
    )

    @property
    def sent(self) -> list[RecordedSend]:
        """The calls that left a message at the provider (returned a receipt, or accepted=True)."""
        with self._lock:
            return [c for c in self.calls if c.sid is not None]

    def fail_next(self, *errors: SmsSendError, accepted: bool = False) -> None:
        """Make the next calls raise these errors, one per call, in order."""
        with self._lock:
            self._script.extend(_Scripted(e, accepted) for e in errors)

    def fail_number(self, to: str, error: SmsSendError | None) -> None:
        """Make every send to this number raise `error` (None clears it)."""
        with self._lock:
            if error is None:
                self._by_number.pop(to, None)
            else:
                self._by_number[to] = error

    def place_call(self, *, to: str, url: str, status_callback: str) -> str:
        """Record a phone call (a number made to fail with `fail_number` raises its error)."""
        with self._lock:
            error = self._by_number.get(to)
            if error is not None:
                raise error
            sid = f"CA{next(self._counter):032x}"
            self.voice_calls.append((to, url, status_callback, sid))
            return sid

    def reset(self) -> None:
        """Forget calls and scripted errors."""
        with self._lock:
            self.voice_calls.clear()
            self.calls.clear()
            self._script.clear()
            self._by_number.clear()

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
        """Record the call; return a receipt or raise the scripted error."""
        with self._lock:
            scripted: _Scripted | None = None
            if to in self._by_number:
                scripted = _Scripted(self._by_number[to], accepted=False)
            elif self._script:
                scripted = self._script.popleft()
            sid = None
            if scripted is None or scripted.accepted:
                sid = f"SM{next(self._counter):032x}"
            self.calls.append(
                RecordedSend(
                    to=to,
                    body=body,
                    status_callback=status_callback,
                    attempt=attempt,
                    validity_period=validity_period,
                    sid=sid,
                    error=scripted.error if scripted else None,
                    at=datetime.now(UTC),
                    sender=sender,
                )
            )
        if scripted is not None:
            raise scripted.error
        assert sid is not None
        return SendReceipt(sid=sid, status="queued", error_code=None)

    def fetch_message(self, sid: str) -> SentMessage | None:
        """The recorded message with this sid, if any."""
        return next((m for m in self._messages() if m.sid == sid), None)

    def find_messages(self, *, to: str, created_after: datetime) -> list[SentMessage]:
        """Recorded messages to this number created after the given time, oldest first."""
        return [
            m
            for m in self._messages()
            if m.to == to and m.created_at is not None and m.created_at > created_after
        ]

    def _messages(self) -> list[SentMessage]:
        return [
            SentMessage(
                sid=c.sid, to=c.to, body=c.body, status="queued", error_code=None, created_at=c.at
            )
            for c in self.sent
            if c.sid is not None
        ]
