"""The dispatcher: claims due outbox rows, hands them to the SMS provider, records what happened.

Claim, send, record are three steps. The claim is a short transaction (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so several dispatchers never take the same row; SQLite runs exactly one dispatcher)
that marks rows `sending` with a lease. The provider call happens outside any transaction. The
result is recorded in a new transaction.

Lanes: a dispatcher process runs two loops. The urgent lane takes staff alerts only (priority
below PRIORITY_STAFF_NOTICE), with a lease of seconds, and reconciles its ambiguous sends every
few seconds; the routine lane takes everything else. Each claims no more than its sender's rate
lets it send in about a second (staff alerts count as SMS: those for one phone share a bundle),
so a staff alert never queues behind participant messages already claimed, nor behind alerts a
busy process holds while later ones could have joined their nurse's bundle. Every send first
takes a slot of its sender's rate (notifications/ratelimit.py), shared by all dispatchers on all
machines; an urgent send that finds the slot taken reserves the next one. Staff alerts go out
from their own sender when one is configured (`alert_sender`), so no participant message can
delay them at all.

Failure handling:
- 429 / connection refused (the provider surely did not take it): back to pending, exponential
  backoff with jitter; a 429 also pauses the sender for every dispatcher (Retry-After, or 1 s);
- 5xx / timeouts (the provider may have taken it): the row stays `sending`. Its outbox id is in the
  StatusCallback URL, so a callback links the SID if the provider did send it; when the lease
  expires with no callback, the reaper asks the provider's message log before retrying, so a
  message is never blindly sent twice;
- 21610 (recipient replied STOP): final `opted_out`, and the domain is told (consent, care team);
- other permanent errors: final `failed`.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from notifications import outbox
from notifications.messages import MessageKind, bundle_prefix
from notifications.models import (
    PRIORITY_REMINDER,
    PRIORITY_STAFF_NOTICE,
    MessageCategory,
    MessageStatus,
    OutboxMessage,
)
from notifications.providers.base import (
    CODE_TOO_MANY_REQUESTS,
    PermanentSendError,
    SmsProvider,
    TransientSendError,
)
from notifications.ratelimit import MemoryRate, SendRate, interval
from notifications.segments import count_segments
from notifications.sqltypes import utcnow

log = logging.getLogger("stepdown.dispatcher")

# Reminders that sit in the provider's queue longer than this are dropped by the provider.
REMINDER_VALIDITY_SECONDS = 3600
# How many accepted sends are written per transaction.
RECORD_EVERY = 10


@dataclass
class DispatchStats:
    """What one pass did."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    ambiguous: int = 0
    failed: int = 0
    opted_out: int = 0
    expired: int = 0
    reconciled: int = 0

    def add(self, other: DispatchStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Lane(enum.StrEnum):
    """Which rows a dispatcher loop claims."""

    ALL = "all"  # one loop for everything (tests, `stepdown scheduler --once`)
    URGENT = "urgent"  # staff alerts only
    ROUTINE = "routine"  # everything but staff alerts


STAFF_CATEGORIES = (MessageCategory.STAFF_ALERT, MessageCategory.STAFF_NOTICE)


def is_urgent(priority: int) -> bool:
    """Staff alerts (and their acknowledgement confirmations): the urgent lane's rows."""
    return priority < PRIORITY_STAFF_NOTICE


def backoff_seconds(attempt: int, *, base: float = 5.0, cap: float = 300.0) -> float:
    """Exponential backoff with equal jitter: attempt n waits between half and all of
    base·2^(n-1), capped (attempt 1 → 2.5–5 s, then 5–10, 10–20 … 150–300 s).

    The floor matters: with `max_attempts` = 12 the retries span at least ~15 minutes whatever the
    jitter, so a 10-minute provider outage never exhausts a message's attempts. (A floor fixed at
    base/2 let unlucky rows burn all 12 attempts in under a minute.)
    """
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


UnsubscribedHook = Callable[[Session, OutboxMessage, datetime], None]
FailedHook = Callable[[Session, OutboxMessage, datetime], None]


@dataclass
class Dispatcher:
    """Sends due outbox rows through a provider."""

    session_factory: Callable[[], Session]
    provider: SmsProvider
    callback_base_url: str
    sender: str = "default"
    rate_per_second: float = 1.0
    batch_size: int = 50
    lease_seconds: int = 600
    max_attempts: int = 12
    on_unsubscribed: UnsubscribedHook | None = None
    on_failed: FailedHook | None = None
    # Domain hook: a later moment a row must wait for (the recipient's quiet hours), or None.
    # Called once per claimed batch: {row id: moment it must wait for}; rows absent go now.
    hold: Callable[[Session, list[OutboxMessage], datetime], dict[int, datetime]] | None = None
    clock: Callable[[], datetime] = utcnow
    # Test seam: called after the provider accepted a message, before we record it.
    after_provider_accepted: Callable[[OutboxMessage], None] | None = None
    lane: Lane = Lane.ALL
    # Staff alerts' own sender (a number, or an "MG…" Messaging Service SID) and its rate. None:
    # they leave from `sender`, ahead of participant messages but sharing its rate.
    alert_sender: str | None = None
    alert_rate_per_second: float | None = None
    # Where every sender's send slots live (ratelimit.rate_store); default: this process only.
    rates: SendRate = field(default_factory=MemoryRate)
    # A staff alert's claim lasts seconds: if this process dies mid-send, another dispatcher's
    # reaper (which asks the provider's log, never resends blindly) settles it within about
    # 17 s, so the alert still reaches its nurse within half a minute of its due time.
    urgent_lease_seconds: int = 15
    # A claimed row is handed to the provider only while this long is left of its lease: the
    # provider call may take the client's whole timeout, and must end before the reaper may act.
    send_margin_seconds: float = 12.0
    # Routine claims: no more rows than the sender's rate sends in about this many seconds.
    claim_seconds: float = 1.0
    # How often run_forever reconciles expired leases (None: 2 s urgent lane, else 30 s).
    reap_every_seconds: float | None = None
    # Test seam: how waiting for a send slot sleeps (default: stop.wait, else time.sleep).
    sleep: Callable[[float], None] | None = None
    # Rows the claims expired, or held for quiet hours, since run_once last collected them.
    _expired: int = field(default=0, init=False, repr=False)
    _deferred: int = field(default=0, init=False, repr=False)
    # run_once stopped at max_seconds with work still due.
    _cut_short: bool = field(default=False, init=False, repr=False)

    # --- senders and their rates ----------------------------------------------------------------

    def sender_of(self, row: OutboxMessage) -> str | None:
        """The sender a row leaves from: its own, else the staff sender for anything to staff
        (alerts, tasks, notices: one number the care team knows), else None (the provider's
        default, `sender`)."""
        if row.sender:
            return row.sender
        if self.alert_sender and (is_urgent(row.priority) or row.category in STAFF_CATEGORIES):
            return self.alert_sender
        return None

    def _rate_of(self, sender: str | None) -> float:
        if sender is not None and sender == self.alert_sender:
            rate = self.alert_rate_per_second
            return self.rate_per_second if rate is None else rate
        return self.rate_per_second

    def _interval(self, sender: str | None) -> float:
        return interval(self._rate_of(sender))

    def _claim_cap(self, sender: str | None) -> int | None:
        """Routine rows one claim may take for this sender (None: no limit)."""
        rate = self._rate_of(sender)
        if rate <= 0:
            return None
        return max(1, math.floor(rate * self.claim_seconds))

    def _sleep(self, seconds: float, stop: threading.Event | None) -> bool:
        """Wait; True when stopped meanwhile."""
        if self.sleep is not None:
            self.sleep(seconds)
        elif stop is not None:
            return stop.wait(seconds)
        else:
            time.sleep(seconds)
        return stop is not None and stop.is_set()

    def _take_slot(self, sender: str | None, *, urgent: bool, stop: threading.Event | None) -> bool:
        """Wait for the sender's next send slot (shared by every dispatcher); False if stopped."""
        key, rate = sender or self.sender, self._rate_of(sender)
        while True:
            wait = self.rates.acquire(key, rate, urgent=urgent)
            if wait <= 0:
                return True
            if self._sleep(min(wait, 1.0), stop):
                return False

    # --- claim ----------------------------------------------------------------------------------

    def claim(self) -> list[OutboxMessage]:
        """Take due rows (up to batch_size) and mark them sending with a lease."""
        now = self.clock()
        with self.session_factory() as session, session.begin():
            query = select(OutboxMessage).where(
                OutboxMessage.status == MessageStatus.PENDING,
                col(OutboxMessage.not_before_at) <= now,
            )
            rows = session.exec(
                self._in_lane(query)
                .order_by(
                    col(OutboxMessage.priority),
                    col(OutboxMessage.not_before_at),
                    col(OutboxMessage.id),
                )
                .limit(self._claim_limit())
                .with_for_update(skip_locked=True)
            ).all()
            claimed = []
            expired = deferred = 0
            # Rows taken per sender: each lease starts at its turn at the sender, and routine
            # rows stop at what it sends in about a second (the rest stay pending, for anyone).
            turns: dict[str | None, int] = {}
            routine: dict[str | None, int] = {}
            urgent_sms: dict[str | None, set[str]] = {}
            with session.no_autoflush:
                holds = self.hold(session, list(rows), now) if self.hold is not None else {}
            for row in rows:
                held = holds.get(row.id) if row.id is not None else None
                if held is not None and held > now:
                    if row.expires_at is not None and held >= row.expires_at:
                        outbox.advance(
                            session,
                            row,
                            MessageStatus.EXPIRED,
                            source="dispatcher",
                            now=now,
                            note="quiet hours last past its expiry",
                        )
                        expired += 1
                    else:
                        # Quiet hours at the recipient's end: wait, do not drop.
                        row.not_before_at = held
                        row.updated_at = now
                        session.add(row)
                        outbox.log(
                            session,
                            row,
                            MessageStatus.PENDING,
                            "dispatcher",
                            at=now,
                            note=f"held for quiet hours until {held.isoformat()}",
                        )
                        deferred += 1
                    continue
                if row.expires_at is not None and row.expires_at <= now:
                    # No reminder for yesterday's draw: the moment has passed.
                    outbox.advance(
                        session,
                        row,
                        MessageStatus.EXPIRED,
                        source="dispatcher",
                        now=now,
                        note="expired before it could be sent",
                    )
                    expired += 1
                    continue
                sender = self.sender_of(row)
                urgent = is_urgent(row.priority)
                cap = self._claim_cap(sender)
                if not urgent:
                    if cap is not None and routine.get(sender, 0) >= cap:
                        continue
                    routine[sender] = routine.get(sender, 0) + 1
                else:
                    # Staff SMS, not rows: alerts for a phone already taken ride in its bundle.
                    # The others wait in the queue, where later alerts for the same phone join
                    # them, rather than in this process's hands behind a slow sender.
                    sms = urgent_sms.setdefault(sender, set())
                    key = row.to_e164 if self._bundles(row) else f"row:{row.id}"
                    if cap is not None and key not in sms and len(sms) >= cap:
                        continue
                    sms.add(key)
                turn = turns.get(sender, 0)
                turns[sender] = turn + 1
                lease = self.urgent_lease_seconds if urgent else self.lease_seconds
                row.status = MessageStatus.SENDING
                row.attempts += 1
                row.last_attempt_at = now
                row.lease_until_at = now + timedelta(seconds=lease + turn * self._interval(sender))
                row.updated_at = now
                session.add(row)
                outbox.log(
                    session,
                    row,
                    MessageStatus.SENDING,
                    "dispatcher",
                    at=now,
                    note=f"attempt {row.attempts}",
                )
                claimed.append(row)
            claimed = self._bundle(session, claimed, now)
            session.flush()
            for row in claimed:
                session.expunge(row)
        self._expired += expired  # counted once the expiry is committed
        self._deferred += deferred
        return claimed

    def _claim_limit(self) -> int:
        """Rows one claim locks: the routine lane locks no more than it will take (locked rows
        it leaves would keep other dispatchers from them until its transaction ends)."""
        if self.lane != Lane.ROUTINE:
            return self.batch_size
        caps = [self._claim_cap(None)]
        if self.alert_sender:
            caps.append(self._claim_cap(self.alert_sender))
        if any(cap is None for cap in caps):
            return self.batch_size
        return min(self.batch_size, max(cap for cap in caps if cap is not None))

    def _in_lane(self, query: Any) -> Any:
        if self.lane == Lane.URGENT:
            return query.where(col(OutboxMessage.priority) < PRIORITY_STAFF_NOTICE)
        if self.lane == Lane.ROUTINE:
            return query.where(col(OutboxMessage.priority) >= PRIORITY_STAFF_NOTICE)
        return query

    @staticmethod
    def _bundles(row: OutboxMessage) -> bool:
        """A staff alert that may share one SMS with the other alerts for its phone."""
        return row.category == MessageCategory.STAFF_ALERT and bool(row.bundle_item)

    def _bundle(
        self, session: Session, rows: list[OutboxMessage], now: datetime
    ) -> list[OutboxMessage]:
        """Staff alerts claimed together for the same phone go out as one SMS listing their codes
        (as many as fit in two segments; the rest wait for the next pass). The first alert is
        never held back: it is always in the first SMS."""
        groups: dict[str, list[OutboxMessage]] = {}
        for row in rows:
            if self._bundles(row):
                groups.setdefault(row.to_e164, []).append(row)
        out: list[OutboxMessage] = []
        dropped: set[int | None] = set()
        for group in groups.values():
            if len(group) < 2 and group[0].kind != MessageKind.ALERT_BUNDLE.value:
                continue
            # (A bundle SMS given back to the queue is written again, even alone: its old text
            # listed alerts that have since gone back to the queue on their own.)
            items = [(r.bundle_item["code"], r.bundle_item["ack"]) for r in group]  # type: ignore[index]
            sms, shown = bundle_prefix(group[0].locale, items, f"{self.callback_base_url}/alerts")
            leader = group[0]
            leader.body = sms.text
            leader.redacted_body = sms.redacted
            leader.segments = count_segments(sms.text).segments
            leader.kind = MessageKind.ALERT_BUNDLE.value
            session.add(leader)
            for row in group[1:shown]:
                row.bundled_into_id = leader.id
                row.status_note = f"sent within message {leader.id}"
                session.add(row)
                outbox.log(
                    session,
                    row,
                    MessageStatus.SENDING,
                    "dispatcher",
                    at=now,
                    note=f"bundled into {leader.id}",
                )
                dropped.add(row.id)
            for row in group[shown:]:
                # Not in this SMS: back to pending for the next bundle, attempt not counted.
                row.status = MessageStatus.PENDING
                row.attempts -= 1
                row.lease_until_at = None
                session.add(row)
                outbox.log(
                    session,
                    row,
                    MessageStatus.PENDING,
                    "dispatcher",
                    at=now,
                    note="waits for the next bundle",
                )
                dropped.add(row.id)
        for row in rows:
            if row.id not in dropped:
                out.append(row)
        return out

    # --- send -----------------------------------------------------------------------------------

    def send(
        self,
        row: OutboxMessage,
        stop: threading.Event | None = None,
        *,
        accepted: list[tuple[int | None, str]] | None = None,
    ) -> DispatchStats:
        """Hand one claimed row to the provider and record the outcome. With `accepted`, a
        success is appended there for `record_sent` to write with others in one transaction
        (failures are always written at once)."""
        stats = DispatchStats()
        sender = self.sender_of(row)
        if not self._take_slot(sender, urgent=is_urgent(row.priority), stop=stop):
            self.release([row.id], note="released at shutdown")
            return stats
        lease = row.lease_until_at
        if lease is not None and self.clock() > lease - timedelta(seconds=self.send_margin_seconds):
            # Its turn came too late to finish inside the lease (another dispatcher kept the
            # sender busy): the reaper could act meanwhile, so it goes back to the queue unsent.
            self.release([row.id], note="lease nearly over before its turn; not sent")
            return stats
        callback = f"{self.callback_base_url}/twilio/status/{row.id}"
        validity = REMINDER_VALIDITY_SECONDS if row.priority >= PRIORITY_REMINDER else None
        try:
            receipt = self.provider.send_sms(
                to=row.to_e164,
                body=row.body,
                status_callback=callback,
                attempt=row.attempts,
                validity_period=validity,
                sender=sender,
            )
        except PermanentSendError as exc:
            self._record_permanent(row, exc, stats)
            return stats
        except TransientSendError as exc:
            self._record_transient(row, exc, stats)
            return stats
        if self.after_provider_accepted is not None:
            self.after_provider_accepted(row)
        if accepted is not None:
            accepted.append((row.id, receipt.sid))
        else:
            self.record_sent([(row.id, receipt.sid)])
        stats.sent += 1
        return stats

    def record_sent(self, accepted: list[tuple[int | None, str]]) -> None:
        """Write the SIDs of messages the provider accepted, in one transaction. A status
        callback that got there first (even "delivered") is not undone: status moves forward."""
        ids = [i for i, _ in accepted if i is not None]
        if not ids:
            return
        now = self.clock()
        sids = dict(accepted)
        with self.session_factory() as session, session.begin():
            rows = session.exec(
                select(OutboxMessage)
                .where(col(OutboxMessage.id).in_(ids))
                .order_by(col(OutboxMessage.id))
                .with_for_update()
            ).all()
            for fresh in rows:
                if fresh.provider_sid is None:
                    fresh.provider_sid = sids[fresh.id]
                outbox.advance(session, fresh, MessageStatus.SENT, source="dispatcher", now=now)
                fresh.lease_until_at = None
                session.add(fresh)

    def _record_permanent(
        self, row: OutboxMessage, exc: PermanentSendError, stats: DispatchStats
    ) -> None:
        now = self.clock()
        with self.session_factory() as session, session.begin():
            fresh = session.get(OutboxMessage, row.id, with_for_update=True)
            if fresh is None:
                return
            if exc.is_unsubscribed:
                outbox.advance(
                    session,
                    fresh,
                    MessageStatus.OPTED_OUT,
                    source="dispatcher",
                    now=now,
                    error_code=exc.code,
                    note="recipient unsubscribed",
                )
                stats.opted_out += 1
                if self.on_unsubscribed is not None:
                    self.on_unsubscribed(session, fresh, now)
            else:
                outbox.advance(
                    session,
                    fresh,
                    MessageStatus.FAILED,
                    source="dispatcher",
                    now=now,
                    error_code=exc.code,
                    note=exc.reason,
                )
                stats.failed += 1
                if self.on_failed is not None:
                    self.on_failed(session, fresh, now)

    def _record_transient(
        self, row: OutboxMessage, exc: TransientSendError, stats: DispatchStats
    ) -> None:
        sender = self.sender_of(row)
        throttled = exc.http_status == 429 or exc.code == CODE_TOO_MANY_REQUESTS
        if throttled and self._rate_of(sender) > 0:
            # Twilio never processed it: every dispatcher stops hammering this sender a while.
            self.rates.pause(sender or self.sender, exc.retry_after or 1.0)
        now = self.clock()
        with self.session_factory() as session, session.begin():
            fresh = session.get(OutboxMessage, row.id, with_for_update=True)
            if fresh is None or fresh.status != MessageStatus.SENDING:
                return  # a callback already told us more than the error did
            if exc.is_ambiguous:
                # The provider may have it: keep the lease; a callback or the reaper decides.
                fresh.status_note = f"unconfirmed: {exc.reason}"[:300]
                fresh.error_code = exc.code
                session.add(fresh)
                outbox.log(
                    session,
                    fresh,
                    MessageStatus.SENDING,
                    "dispatcher",
                    at=now,
                    error_code=exc.code,
                    note="unconfirmed; awaiting callback",
                )
                stats.ambiguous += 1
                return
            self._retry_later(session, fresh, now, exc.reason, exc.code, exc.retry_after)
            stats.retried += 1

    def _retry_later(
        self,
        session: Session,
        row: OutboxMessage,
        now: datetime,
        reason: str,
        code: int | None,
        retry_after: float | None = None,
    ) -> None:
        if row.attempts >= self.max_attempts:
            outbox.advance(
                session,
                row,
                MessageStatus.FAILED,
                source="dispatcher",
                now=now,
                error_code=code,
                note=f"gave up after {row.attempts} attempts",
            )
            if self.on_failed is not None:
                self.on_failed(session, row, now)
            return
        delay = max(backoff_seconds(row.attempts), retry_after or 0.0)
        outbox.release_followers(session, row, now)
        row.status = MessageStatus.PENDING
        row.not_before_at = now + timedelta(seconds=delay)
        row.lease_until_at = None
        row.error_code = code
        row.status_note = f"retry in {delay:.0f}s: {reason}"[:300]
        row.updated_at = now
        session.add(row)
        outbox.log(
            session,
            row,
            MessageStatus.PENDING,
            "dispatcher",
            at=now,
            error_code=code,
            note=row.status_note,
        )

    # --- reconcile ------------------------------------------------------------------------------

    def reap(self) -> DispatchStats:
        """Rows whose lease expired with no answer: ask the provider's log, never resend blindly."""
        stats = DispatchStats()
        now = self.clock()
        with self.session_factory() as session, session.begin():
            query = select(OutboxMessage).where(
                OutboxMessage.status == MessageStatus.SENDING,
                col(OutboxMessage.lease_until_at) <= now,
                # Alerts inside a bundle follow their bundle SMS, not a lookup of their own.
                col(OutboxMessage.bundled_into_id).is_(None),
            )
            rows = session.exec(
                self._in_lane(query)
                .order_by(col(OutboxMessage.id))
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                try:
                    found = self._lookup(row)
                except Exception:  # the provider's log cannot be read now (logged): next time
                    log.info("outbox %s: reconciliation postponed", row.id)
                    continue
                if found is not None:
                    row.provider_sid = row.provider_sid or found.sid
                    session.add(row)
                    outbox.advance(
                        session,
                        row,
                        outbox.TWILIO_STATUS.get(found.status, MessageStatus.SENT),
                        source="reconcile",
                        now=now,
                        error_code=found.error_code,
                    )
                    stats.reconciled += 1
                elif found is None and self._can_lookup():
                    # The provider has no such message: it is safe to send it (again).
                    self._retry_later(session, row, now, "not found at the provider", None)
                    stats.retried += 1
                elif row.category == MessageCategory.STAFF_ALERT:
                    # Never resent blindly, yet never left unknown: the alert's next tier is
                    # paged at once (on_failed), so a person hears of it either way.
                    outbox.advance(
                        session,
                        row,
                        MessageStatus.FAILED,
                        source="reconcile",
                        now=now,
                        note="unconfirmed and the provider's log cannot tell; next tier paged",
                    )
                    stats.failed += 1
                    if self.on_failed is not None:
                        self.on_failed(session, row, now)
                else:
                    outbox.advance(
                        session,
                        row,
                        MessageStatus.FAILED,
                        source="reconcile",
                        now=now,
                        note="unconfirmed and not retried (at most once)",
                    )
                    stats.failed += 1
        return stats

    def _can_lookup(self) -> bool:
        return hasattr(self.provider, "find_messages")

    def _lookup(self, row: OutboxMessage) -> Any:
        if not self._can_lookup() or row.last_attempt_at is None:
            return None
        try:
            candidates = self.provider.find_messages(  # type: ignore[attr-defined]
                to=row.to_e164, created_after=row.last_attempt_at - timedelta(minutes=5)
            )
        except Exception:  # the provider is down: decide next time
            log.warning("reconcile lookup failed for outbox %s", row.id, exc_info=True)
            raise
        for message in candidates:
            if message.body == row.body:
                return message
        return None

    # --- loop -----------------------------------------------------------------------------------

    def run_once(
        self, stop: threading.Event | None = None, *, max_seconds: float | None = None
    ) -> DispatchStats:
        """Claim and send until nothing is due (or stop is set, or after the batch in hand
        once `max_seconds` have passed, so that the loop around it can reap and report)."""
        total = DispatchStats()
        started = time.monotonic()
        self._cut_short = False
        while stop is None or not stop.is_set():
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                self._cut_short = True
                break
            rows = self.claim()
            expired, self._expired = self._expired, 0
            deferred, self._deferred = self._deferred, 0
            total.expired += expired
            if not rows:
                if expired or deferred:
                    continue  # a batch of nothing but expired or held rows: more may be due
                break
            total.claimed += len(rows)
            # Successes are written every few messages in one transaction: a transaction per
            # message halved throughput on PostgreSQL. A crash in between leaves rows `sending`,
            # which their status callbacks or the reaper settle (never a blind resend).
            accepted: list[tuple[int | None, str]] = []
            try:
                for index, row in enumerate(rows):
                    if stop is not None and stop.is_set():
                        # Stopping: hand the rest of the batch back now, not after its lease.
                        self.release([r.id for r in rows[index:]])
                        break
                    try:
                        total.add(self.send(row, stop, accepted=accepted))
                    except Exception:
                        # One message's bookkeeping failing must not strand the rest of the
                        # batch; this row stays `sending` and the reaper reconciles it later.
                        log.exception("dispatching outbox %s failed; going on", row.id)
                    if len(accepted) >= RECORD_EVERY:
                        self.record_sent(accepted)
                        accepted = []
            finally:
                self.record_sent(accepted)
        return total

    def release(self, ids: list[int | None], *, note: str = "released at shutdown") -> None:
        """Give claimed rows that were not attempted back to the queue (attempt not counted);
        a bundle gives back the alerts it carried too."""
        if not ids:
            return
        now = self.clock()
        with self.session_factory() as session, session.begin():
            for row in session.exec(
                select(OutboxMessage).where(
                    col(OutboxMessage.id).in_(ids), OutboxMessage.status == MessageStatus.SENDING
                )
            ):
                outbox.release_followers(session, row, now)
                row.status = MessageStatus.PENDING
                row.attempts = max(0, row.attempts - 1)
                row.lease_until_at = None
                row.updated_at = now
                session.add(row)
                outbox.log(session, row, MessageStatus.PENDING, "dispatcher", at=now, note=note)

    def warm(self) -> None:
        """Load lazily imported parts (message catalogues, the provider's client) before the
        first alert needs them: the first send of a cold process was ~0.5 s slower."""
        from notifications.messages import SUPPORTED_LOCALES, load_catalog

        for locale in SUPPORTED_LOCALES:
            load_catalog(locale)
        client = getattr(self.provider, "_client", None)
        if client is not None:
            _ = client.messages  # builds the API domain objects

    def run_forever(self, stop: threading.Event, wait: Callable[[float], None]) -> None:
        """Dispatch until stopped; `wait(seconds)` returns early when woken (LISTEN/NOTIFY)."""
        last_reap = 0.0
        reap_every = self.reap_every_seconds or (2.0 if self.lane == Lane.URGENT else 30.0)
        while not stop.is_set():
            try:
                self.run_once(stop, max_seconds=5.0)
                if time.monotonic() - last_reap > reap_every:
                    # Keep going while batches come back full: after a long outage hundreds of
                    # rows may wait for reconciliation (bounded so sending is not starved).
                    for _ in range(20):
                        reaped = self.reap()
                        if reaped.reconciled + reaped.retried + reaped.failed < self.batch_size:
                            break
                    last_reap = time.monotonic()
            except Exception:
                log.exception("dispatcher pass failed; retrying")
                self._cut_short = False
            if not self._cut_short:  # nothing due: sleep until woken, or a second
                wait(1.0)
