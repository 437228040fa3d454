"""Alert latency benchmark, measured honestly (issue 13, item 8): a positive ctDNA result is POSTed
by a lab → the first SMS of its alert is accepted by the SMS provider. PRODUCT.md, "Targets": p99
under 0.5 s on PostgreSQL and under 2 s on SQLite, every alert, no duplicate SMS; "measured
honestly: from the moment the lab's request is sent, with the production server settings, a
morning's reminder backlog in the outbox, status callbacks on, and alerts spread over many
nurses".

    .venv/bin/python bench/alert_latency.py                    # SQLite, in a temporary file
    .venv/bin/python bench/alert_latency.py --database-url postgresql://postgres@127.0.0.1:5432/test

What runs, each in its own process on a free 127.0.0.1 port, as the README's "Production
deployment" says:
- the web app: `gunicorn -w 4 -b 127.0.0.1:PORT 'server.app:create_app()'` (the README's
  command; 4 sync workers), plus `--no-control-socket` so that two benchmarks can run at once;
- `stepdown scheduler` (the jobs, and the SMS dispatcher's two lanes), and on PostgreSQL
  `--dispatchers` more `stepdown dispatcher` processes (default 1): two dispatchers share the
  senders' rates through Redis;
- the fake Twilio (`python -m notifications.fake_twilio`): it answers each message creation after
  `--latency` seconds (default 0.1) and sends signed status callbacks ("sent", then "delivered",
  `--callback-delay` seconds apart, default 0.1: the callbacks compete with the lab's POSTs
  for the web workers) to the app.
Their environment is production's (STEPDOWN_ENV=production: SECRET_KEY, DATABASE_URL, REDIS_URL,
an https:// PUBLIC_BASE_URL) with these differences, printed at the start: SMS_PROVIDER=fake and
TWILIO_BASE_URL (the fake instead of api.twilio.com); the fake posts its callbacks to the app's
http://127.0.0.1 port while signing them for the https:// URL, as a TLS-terminating proxy in front
of gunicorn would (so TLS costs nothing here); RATELIMIT_KEY_PREFIX is this run's own.

Senders: participants' reminders leave from a long code (TWILIO_FROM_NUMBER) at the default
SMS_RATE_PER_SECOND (1/s). `--alert-sender service` (the default, the README's production
configuration) gives staff messages their own sender, a Messaging Service
(TWILIO_ALERT_MESSAGING_SERVICE_SID) at SMS_ALERT_RATE_PER_SECOND=`--alert-rate` (default 10: an
assumption, stated: e.g. a service pooling ten long codes, or a toll-free or short code allowed
that much); `--alert-sender none` is the README's default without one: alerts share the long code
with the reminders, ahead of them.

The data, through the real services: `--sites` sites (default 20), each with an on-call nurse, a
coordinator and an investigator with verified phones (an administrator of every site too), so no
escalation route is dead; `--results` / sites participants per site (HEROES, cohort stop), each
with a NEGATIVE baseline ctDNA result; a lab account (coordinator of every site) with a bearer
token. Before the burst, `--backlog` participant reminders (default 2,000; real template, distinct
numbers, no participant row, so quiet hours cannot hold them) are written to the outbox due at the
same moment: a morning's backlog.

Measured: `--results` positive results (default 200: 200 alerts, 200 distinct acknowledgement
codes, `--results / --sites` per nurse), each POSTed `--copies` times at once (a lab retrying),
start times uniform over `--spread` seconds (default 60, as reliability-security.md §2.A.1: "200
results arrive in 60 s"), by `--workers` threads. Before it, warm-up: negative results (no alert)
so the web workers have served the path, and one positive whose alert SMS is reported, not
counted. For each result, t0 = when its first copy's request was sent (time.time(), just before
the request is written). For each alert, t1 = when the fake accepted the first SMS carrying its
acknowledgement code (the fake stamps `received_at` as its 201 answer goes back, after its
latency; same machine, same clock). Latency = t1 − t0; an alert whose SMS never arrived counts as
infinite. An SMS may carry one code or several (a bundle: allowed, per nurse). duplicate_sms =
(code, phone) pairs that reached the fake more than once. The senders' observed rates (smallest
gap, most SMS in any one second) are printed from the fake's records. The last line is
`RESULT p50_ms=… p99_ms=… alerts=… duplicate_sms=…` (nearest-rank percentiles over the alerts).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import math
import os
import random
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests
from sqlalchemy.pool import NullPool
from sqlmodel import Session, col, select

from api.schemas import CtdnaResultSchema
from config.settings import DevelopmentConfig
from notifications.models import (
    MessageCategory,
    MessageLog,
    MessageStatus,
    OutboxMessage,
)
from server.alerts import service as alert_service
from server.alerts.models import Alert
from server.app import create_app
from server.auth import service as auth_service
from server.auth.models import Role, SiteMembership
from server.db import get_db, make_engine
from server.participants import service as participant_service
from server.participants.entry_gate import attested_passing
from server.participants.models import Locale, ParticipantStatus, Site
from server.protocols.models import Study
from server.protocols.service import find_protocol
from server.results import service as result_service
from server.results.models import LabResult, ResultKind
from server.scheduler import job_specs

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ is not an installed package
    sys.path.insert(0, str(ROOT))

from bench._common import enqueue_draw_reminder, scratch_database  # noqa: E402
from bench._processes import (  # noqa: E402
    Child,
    Children,
    exit_cleanly_on_signals,
    load_average,
    log,
    stepdown_command,
    utc,
    wait_for,
)

LAB = "natera"
STUDY = "HEROES"
SITE_TZ = "Europe/Paris"
PARTICIPANT_SENDER = "+15005550006"  # a long code
PASSWORD = "alert-latency-bench-password"
ACK_RE = re.compile(r"\bACK\s+(\d{6}|\d{4})\b")
TARGET_P99_MS = {"sqlite": 2000.0, "postgresql": 500.0}


# --- small helpers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def fmt_ms(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.0f}"


def summary(label: str, values_ms: Sequence[float]) -> str:
    if not values_ms:
        return f"{label}: no values"
    finite = [v for v in values_ms if not math.isinf(v)]
    mean = sum(finite) / len(finite) if finite else math.inf
    mean_label = "mean" if len(finite) == len(values_ms) else "mean of finite"
    return (
        f"{label} (n={len(values_ms)}): min {fmt_ms(min(values_ms))}  "
        f"p50 {fmt_ms(percentile(values_ms, 50))}  p90 {fmt_ms(percentile(values_ms, 90))}  "
        f"p95 {fmt_ms(percentile(values_ms, 95))}  p99 {fmt_ms(percentile(values_ms, 99))}  "
        f"max {fmt_ms(max(values_ms))}  {mean_label} {fmt_ms(mean)} ms"
    )


def histogram(values_ms: Sequence[float]) -> list[str]:
    edges = [50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 60000.0, 600000.0, math.inf]
    # An SMS that never arrived counts as infinite: the last row, and only those.
    counts = Counter(
        math.inf if math.isinf(v) else next(e for e in edges if v < e) for v in values_ms
    )
    lines, low = [], "      "
    for edge in edges:
        n = counts.get(edge, 0)
        label = f"{low} < {edge:>6.0f} ms" if not math.isinf(edge) else "never arrived    "
        lines.append(f"  {label} {n:>4}  {'#' * math.ceil(60 * n / max(1, len(values_ms)))}")
        low = f"{edge:>6.0f}"
    return lines


@dataclass
class Stack:
    fake_url: str
    web_url: str
    children: list[Child]
    settings: dict[str, str]  # what differs from a production install, and the senders
    alert_sender: str | None


def redis_reachable(url: str) -> bool:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def start_stack(children: Children, url: str, args: argparse.Namespace, prefix: str) -> Stack:
    """The fake Twilio, the web app, the scheduler and the extra dispatchers, sharing one
    production environment."""
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    account_sid = "AC" + secrets.token_hex(16)
    auth_token = secrets.token_hex(16)
    alert_service_sid = "MG" + secrets.token_hex(16)
    web_port = free_port()
    web_base = f"http://127.0.0.1:{web_port}"
    public_base = f"https://127.0.0.1:{web_port}"
    fake = children.start(
        "fake_twilio",
        [
            sys.executable,
            "-m",
            "notifications.fake_twilio",
            "--port",
            "0",
            "--account-sid",
            account_sid,
            "--auth-token",
            auth_token,
            "--messaging-service-sid",
            alert_service_sid,
            "--latency",
            str(args.latency),
            "--callback-delay",
            str(args.callback_delay),
            "--deliver-via",
            web_base,
        ],
        {**os.environ, "PYTHONUNBUFFERED": "1"},
    )

    def fake_url() -> str | None:
        found = re.search(r"fake Twilio on (http://\S+)", fake.log_path.read_text(errors="replace"))
        return found.group(1) if found else None

    fake_base = str(wait_for("the fake Twilio", fake_url, [fake], 20))
    # Production refuses to start without these; nothing else is set but what differs.
    production = {
        "STEPDOWN_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": url,
        "PUBLIC_BASE_URL": public_base,
        "TWILIO_ACCOUNT_SID": account_sid,
        "TWILIO_AUTH_TOKEN": auth_token,
        "TWILIO_FROM_NUMBER": PARTICIPANT_SENDER,
    }
    differs = {
        "SMS_PROVIDER": "fake",
        "TWILIO_BASE_URL": fake_base,
        "RATELIMIT_KEY_PREFIX": prefix,
    }
    if args.redis_url != "none" and redis_reachable(args.redis_url):
        production["REDIS_URL"] = args.redis_url
    else:
        differs["RATELIMIT_STORAGE_URI"] = "memory://"  # production's single-process escape
    senders: dict[str, str] = {}
    if args.sms_rate is not None:
        differs["SMS_RATE_PER_SECOND"] = f"{args.sms_rate:g}"
    if args.alert_sender == "service":
        senders["TWILIO_ALERT_MESSAGING_SERVICE_SID"] = alert_service_sid
        senders["SMS_ALERT_RATE_PER_SECOND"] = f"{args.alert_rate:g}"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TWILIO_", "SMS_", "STEPDOWN_", "RATELIMIT_", "REDIS_"))
    }
    env.update(PYTHONUNBUFFERED="1", **production, **differs, **senders)
    web = children.start(
        "web",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(args.web_workers),
            "-b",
            f"127.0.0.1:{web_port}",
            # gunicorn ≥ 24 listens on a control socket at one fixed path per user: not ours.
            *(["--no-control-socket"] if importlib.util.find_spec("gunicorn.ctl") else []),
            "server.app:create_app()",
        ],
        env,
    )
    running = [fake, web]
    running.append(children.start("scheduler", [*stepdown_command(), "scheduler"], env))
    extra = args.dispatchers if args.dispatchers is not None else (1 if dialect != "sqlite" else 0)
    if dialect == "sqlite":
        extra = 0  # SQLite: the scheduler's dispatcher is the only one
    for n in range(extra):
        running.append(
            children.start(f"dispatcher{n + 1}", [*stepdown_command(), "dispatcher"], env)
        )

    def web_ready() -> bool:
        try:
            return requests.get(f"{web_base}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for("the web app (/healthz)", web_ready, running, 60)
    # The scheduler runs every job once at start; let that first pass finish so the burst meets
    # a scheduler in its steady state (if its log says so; else a few seconds).
    job_ids = [spec.id for spec in job_specs()]
    scheduler_log = running[2].log_path
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in running:
            child.check_alive()
        text = scheduler_log.read_text(errors="replace")
        if all(f"job {j}" in text for j in job_ids):
            break
        time.sleep(0.2)
    settings = {**differs, **senders}
    settings["REDIS_URL"] = production.get("REDIS_URL", "(none)")
    settings["PUBLIC_BASE_URL"] = public_base
    return Stack(
        fake_base,
        web_base,
        running,
        settings,
        alert_service_sid if args.alert_sender == "service" else None,
    )


# --- seeding --------------------------------------------------------------------------------


@dataclass
class Seeded:
    token: str
    codes: list[str]  # the burst's participants, in order
    site_of: dict[str, int]  # participant code → site number (1-based)
    nurse_of_site: dict[int, str]  # site number → its on-call nurse's phone
    warmup_codes: list[str]
    route_warnings: list[str]


def app_config(url: str) -> dict[str, Any]:
    config = DevelopmentConfig().as_dict()
    config.update(DATABASE_URL=url, SMS_PROVIDER="fake", DEBUG=False, REDIS_URL=None)
    return config


def phone(site: int, role: int) -> str:
    return f"+336{10 + site:02d}{role:06d}"


def seed(url: str, sites: int, per_site: int, warmups: int, now: datetime) -> Seeded:
    """Sites and their staff, the study, a lab account + token, participants with a negative
    baseline; all through the real services."""
    app = create_app(app_config(url))
    schema = CtdnaResultSchema()
    anchor = now.date() - timedelta(days=30)
    baseline_at = datetime.combine(anchor - timedelta(days=7), datetime.min.time(), tzinfo=UTC)
    codes: list[str] = []
    site_of: dict[str, int] = {}
    nurse_of_site: dict[int, str] = {}
    warnings: list[str] = []
    try:
        with app.app_context(), get_db(app).job_session() as session:
            site_ids: dict[int, int] = {}
            for n in range(1, sites + 1):
                site = auth_service.create_site(
                    session=session,
                    actor=None,
                    code=f"BENCH-{n:02d}",
                    name=f"Alert latency bench site {n}",
                    country="FR",
                    timezone=SITE_TZ,
                    failsafe_role="investigator",  # required before enrolment (issue 16)
                    now=now,
                )
                assert site.id is not None
                site_ids[n] = site.id
            session.add(Study(key=STUDY, title="HEROES", protocol_key="heroes", created_at=now))
            session.flush()

            def staff(email: str, role: Role, number: str | None, ids: list[int]) -> Any:
                return auth_service.create_user(
                    session=session,
                    actor=None,
                    email=email,
                    full_name=email.split("@")[0],
                    password=PASSWORD,
                    role=role,
                    site_ids=ids,
                    phone_e164=number,
                    is_phone_verified=number is not None,
                    now=now,
                )

            every = list(site_ids.values())
            staff("admin@alertbench.test", Role.ADMIN, phone(0, 4), every)
            lab = staff("lab@alertbench.test", Role.COORDINATOR, None, every)
            for n, site_id in site_ids.items():
                nurse = staff(f"nurse{n}@alertbench.test", Role.NURSE, phone(n, 1), [site_id])
                staff(f"coordinator{n}@alertbench.test", Role.COORDINATOR, phone(n, 2), [site_id])
                staff(f"investigator{n}@alertbench.test", Role.INVESTIGATOR, phone(n, 3), [site_id])
                membership = session.exec(
                    select(SiteMembership).where(
                        SiteMembership.user_id == nurse.id, SiteMembership.site_id == site_id
                    )
                ).one()
                membership.is_on_call = True
                session.add(membership)
                nurse_of_site[n] = phone(n, 1)
            session.flush()

            enrolled: list[tuple[str, int]] = []
            for i in range(sites * per_site):
                n = i % sites + 1  # round robin: the burst's order mixes the sites
                code = f"AB{n:02d}-{i // sites + 1:03d}"
                codes.append(code)
                site_of[code] = n
                enrolled.append((code, n))
            warmup_codes = [f"WU-{i:02d}" for i in range(1, warmups + 1)]
            enrolled += [(code, 1) for code in warmup_codes]
            for code, n in enrolled:
                participant_service.enroll(
                    session=session,
                    user=lab,
                    study=STUDY,
                    site_id=site_ids[n],
                    study_code=code,
                    timezone=None,
                    cohort="stop",
                    anchor_date=anchor,
                    status=ParticipantStatus.OFF_TREATMENT_MONITORING,
                    locale=Locale.FR,
                    phone=None,
                    has_sms_consent=False,
                    # The entry gate was passed before (its facts attested, issue 17).
                    eligibility=attested_passing(find_protocol(STUDY.lower()), baseline_at.date()),
                    now=now,
                )
                fields = schema.load(
                    ctdna_body(code, f"BASE-{code}", "negative", baseline_at, mtm=0.0)
                )
                for key in ("lab", "study", "study_code", "accession_id"):
                    fields.pop(key)
                ingested = result_service.ingest(
                    session=session,
                    kind=ResultKind.CTDNA,
                    source=LAB,
                    accession_id=f"BASE-{code}",
                    study_code=code,
                    study_key=STUDY,
                    fields=fields,
                    now=now,
                    actor="bench:seed",
                )
                assert ingested.created and ingested.alert_id is None, "baseline opened an alert"
            token, _ = auth_service.issue_token(
                session=session, user=lab, ttl_hours=24, now=now, label="alert latency bench"
            )

            for site in session.exec(select(Site)).all():
                warnings += [
                    f"{site.code} {t['route']} tier {t['tier']}: {t['warning']}"
                    for t in alert_service.route_health(session, site)
                    if t["warning"]
                ]
    finally:
        get_db(app).engine.dispose()
    return Seeded(token, codes, site_of, nurse_of_site, warmup_codes, warnings)


def write_backlog(url: str, count: int, due_at: datetime) -> float:
    """`count` participant reminders due at `due_at`, as the reminder job writes them (real
    template, one dedupe key each); returns the seconds it took."""
    started = time.monotonic()
    app = create_app(app_config(url))
    zone = ZoneInfo(SITE_TZ)
    when = datetime.combine(due_at.astimezone(zone).date() + timedelta(days=1), datetime.min.time())
    when = when.replace(hour=9, tzinfo=zone)
    try:
        with app.app_context(), get_db(app).job_session() as session:
            for n in range(count):
                enqueue_draw_reminder(
                    session,
                    dedupe_key=f"bench-backlog:{n}:day_before:sms",
                    to=f"+3375{n:07d}",
                    code=f"BL-{n:05d}",
                    when=when,
                    tz=SITE_TZ,
                    due_at=due_at,
                    expires_at=due_at + timedelta(hours=2),
                    ref=f"bench-backlog:{n}",
                    now=due_at,
                )
    finally:
        get_db(app).engine.dispose()
    return time.monotonic() - started


def ctdna_body(
    code: str, accession: str, call: str, collected_at: datetime, mtm: float
) -> dict[str, Any]:
    return {
        "lab": LAB,
        "study": STUDY,
        "study_code": code,
        "accession_id": accession,
        "collected_at": collected_at.isoformat(),
        "call": call,
        "mtm_per_ml": mtm,
    }


# --- the burst ------------------------------------------------------------------------------


@dataclass
class Attempt:
    result: int
    copy: int
    sent_wall: float
    sent_mono: float
    done_wall: float = 0.0
    done_mono: float = 0.0
    status: int | None = None
    alert_id: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Poster:
    """POSTs results with one keep-alive requests.Session per worker thread."""

    def __init__(self, base_url: str, token: str) -> None:
        self.url = f"{base_url}/api/v1/results/ctdna"
        self.token = token
        self.local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self.local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.token}"
            self.local.session = session
        return session

    def post(self, result: int, copy: int, body: dict[str, Any]) -> Attempt:
        attempt = Attempt(result, copy, time.time(), time.monotonic())
        try:
            response = self._session().post(self.url, json=body, timeout=60)
            attempt.done_wall, attempt.done_mono = time.time(), time.monotonic()
            attempt.status = response.status_code
            try:
                data = response.json()
            except ValueError:
                data = {}
            if attempt.ok:
                attempt.alert_id = data.get("alert_id")
            else:
                error = data.get("error") if isinstance(data, dict) else None
                attempt.error = (
                    f"{response.status_code} {error.get('code')}: {error.get('message')}"
                    if isinstance(error, dict)
                    else f"{response.status_code}: {response.text[:200]}"
                )
        except requests.RequestException as exc:
            attempt.done_wall, attempt.done_mono = time.time(), time.monotonic()
            attempt.error = f"{type(exc).__name__}: {exc}"
        return attempt


@dataclass
class WarmUp:
    statuses: Counter[int]
    alert_status: int | None
    alert_latency_ms: float | None  # the cold dispatcher's first SMS


def warm_up(
    poster: Poster,
    fake_url: str,
    codes: Sequence[str],
    workers: int,
    now: datetime,
    *,
    dispatcher: bool,
) -> WarmUp:
    """Negative follow-up results (no alert, no SMS) so the web workers have served the ingest
    path, then (with `dispatcher`) one positive result whose alert SMS is the dispatcher's first
    send (the first send after start-up pays lazy imports); its latency is reported, not
    counted."""
    collected = now - timedelta(days=2)
    statuses: Counter[int] = Counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(
                poster.post,
                -1,
                i,
                ctdna_body(code, f"WARM-{code}-{i}", "negative", collected, mtm=0.0),
            )
            for i in range(2)
            for code in codes
        ]
        for future in futures:
            attempt = future.result()
            statuses[attempt.status or 0] += 1
    if not dispatcher:
        return WarmUp(statuses, None, None)
    first = poster.post(
        -1, 0, ctdna_body(codes[0], f"WARM-POS-{codes[0]}", "positive", collected, mtm=0.1)
    )
    latency = None
    deadline = time.monotonic() + 30
    while first.ok and time.monotonic() < deadline:
        arrivals = fetch_arrivals(fake_url)
        if arrivals.first_wall:
            latency = (min(arrivals.first_wall.values()) - first.sent_wall) * 1000
            break
        time.sleep(0.05)
    return WarmUp(statuses, first.status, latency)


@dataclass
class Burst:
    attempts: list[Attempt] = field(default_factory=list)
    retries: list[Attempt] = field(default_factory=list)
    seconds: float = 0.0


def burst(
    poster: Poster,
    bodies: Sequence[dict[str, Any]],
    *,
    copies: int,
    workers: int,
    spread: float,
    rng: random.Random,
) -> Burst:
    """Each result's copies are submitted at the same instant; the instants are uniform over
    `spread` seconds, so the results come in random order."""
    out = Burst()
    plan = sorted((rng.uniform(0.0, spread), i) for i in range(len(bodies)))
    lock = threading.Lock()
    stop = threading.Event()

    def run(result: int, copy: int) -> None:
        attempt = poster.post(result, copy, bodies[result])
        with lock:
            out.attempts.append(attempt)

    start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lab")
    try:
        futures: list[Future[None]] = []
        for offset, result in plan:
            delay = start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.extend(pool.submit(run, result, copy) for copy in range(copies))
        wait(futures)
        for future in futures:
            future.result()

        # A result none of whose copies got a 2xx is retried as a lab would: after 0.5 s, then
        # 1, 2, 4, 8 s, until a 2xx.
        def retry(result: int) -> None:
            for n in range(5):
                if stop.wait(0.5 * 2**n):
                    return
                attempt = poster.post(result, copies + n, bodies[result])
                with lock:
                    out.retries.append(attempt)
                if attempt.ok:
                    return

        answered = {a.result for a in out.attempts if a.ok}
        retries = [pool.submit(retry, r) for r in sorted(set(range(len(bodies))) - answered)]
        wait(retries)
        for future in retries:
            future.result()
    except BaseException:
        # Ctrl-C or an error: drop what has not started; running POSTs end with the server.
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    out.seconds = time.monotonic() - start
    return out


# --- what arrived at the fake ---------------------------------------------------------------


@dataclass
class Arrivals:
    first_wall: dict[str, float]  # ack code → first acceptance time (time.time() scale)
    first_codes: dict[str, int]  # ack code → how many codes the SMS that first carried it had
    first_sender: dict[str, str]  # ack code → the sender of that SMS
    pairs: Counter[tuple[str, str]]  # (ack code, phone) → SMS count
    by_sender: dict[str, list[float]]  # sender → acceptance times (monotonic), sorted
    reminders_at: list[float]  # acceptance times (wall) of SMS without an ACK code
    callbacks: Counter[str]  # "sent 204" → count of status callbacks the fake made
    messages: int
    bundles: int
    without_code: int


def fetch_arrivals(fake_url: str) -> Arrivals:
    messages = requests.get(f"{fake_url}/_fake/messages", timeout=30).json()
    first_wall: dict[str, float] = {}
    first_codes: dict[str, int] = {}
    first_sender: dict[str, str] = {}
    pairs: Counter[tuple[str, str]] = Counter()
    by_sender: dict[str, list[float]] = {}
    reminders_at: list[float] = []
    callbacks: Counter[str] = Counter()
    bundles = without_code = 0
    for m in messages:
        codes = set(ACK_RE.findall(m["body"]))
        sender = m["messaging_service_sid"] or m["from"] or "?"
        at_wall = datetime.fromisoformat(m["received_at"]).timestamp()
        by_sender.setdefault(sender, []).append(float(m["received_monotonic"]))
        for c in m.get("callbacks") or []:
            callbacks[f"{c['params'].get('MessageStatus')} {c.get('http_status')}"] += 1
        if not codes:
            without_code += 1
            reminders_at.append(at_wall)
        bundles += len(codes) > 1
        for code in codes:
            pairs[(code, m["to"])] += 1
            if code not in first_wall or at_wall < first_wall[code]:
                first_wall[code] = at_wall
                first_codes[code] = len(codes)
                first_sender[code] = sender
    for times in by_sender.values():
        times.sort()
    return Arrivals(
        first_wall,
        first_codes,
        first_sender,
        pairs,
        by_sender,
        sorted(reminders_at),
        callbacks,
        len(messages),
        bundles,
        without_code,
    )


def poll_arrivals(fake_url: str, codes: set[str], timeout: float, settle: float) -> Arrivals:
    """Poll until every code arrived (or timeout), then wait `settle` s for late duplicates."""
    deadline = time.monotonic() + timeout
    arrivals = fetch_arrivals(fake_url)
    while not codes <= arrivals.first_wall.keys() and time.monotonic() < deadline:
        time.sleep(0.5)
        arrivals = fetch_arrivals(fake_url)
    time.sleep(settle)
    return fetch_arrivals(fake_url)


def most_in(times: Sequence[float], window: float) -> int:
    """The most sends in any `window` seconds."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def rate_line(label: str, times: Sequence[float]) -> str:
    if len(times) < 2:
        return f"{label}: {len(times)} SMS"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    span = times[-1] - times[0]
    return (
        f"{label}: {len(times)} SMS over {span:.1f} s ({(len(times) - 1) / span:.2f}/s), "
        f"smallest gap {min(gaps) * 1000:.0f} ms, most in any 10 s {most_in(times, 10.0)}"
    )


# --- what the database says -----------------------------------------------------------------


@dataclass
class DbAlert:
    alert_id: int
    ack_code: str
    accession: str
    sms_rows: int = 0
    sms_to: set[str] = field(default_factory=set)
    sms_status: str | None = None
    enqueued_at: float | None = None  # the request's clock when it wrote the outbox row
    claimed_at: float | None = None  # the dispatcher's claim (status → sending)


def read_alerts(url: str, accessions: set[str]) -> tuple[dict[str, DbAlert], int, Counter[str]]:
    """Our alerts by accession id (with their SMS trail), the total alert rows, and the staff
    alert outbox rows by status."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        with Session(engine) as session:
            rows = session.exec(
                select(Alert.id, Alert.ack_code, LabResult.accession_id).join(
                    LabResult, col(LabResult.id) == col(Alert.result_id)
                )
            ).all()
            total_alerts = len(session.exec(select(Alert.id)).all())
            found = {
                acc: DbAlert(int(aid), code, acc)  # type: ignore[arg-type]
                for aid, code, acc in rows
                if acc in accessions
            }
            by_ref = {f"alert:{a.alert_id}": a for a in found.values()}
            statuses: Counter[str] = Counter()
            messages = session.exec(
                select(OutboxMessage).where(OutboxMessage.category == MessageCategory.STAFF_ALERT)
            ).all()
            ids = {}
            for m in messages:
                statuses[m.status.value] += 1
                a = by_ref.get(m.ref or "")
                if a is None:
                    continue
                a.sms_rows += 1
                a.sms_to.add(m.to_e164)
                a.sms_status = m.status.value
                ids[m.id] = a
                created = utc(m.created_at).timestamp()
                a.enqueued_at = min(a.enqueued_at or created, created)
            for entry in session.exec(
                select(MessageLog).where(
                    col(MessageLog.message_id).in_(list(ids)),
                    MessageLog.status == MessageStatus.SENDING,
                )
            ).all():
                a = ids[entry.message_id]
                at = utc(entry.at).timestamp()
                a.claimed_at = max(a.claimed_at or at, at)  # the claim that sent it
    finally:
        engine.dispose()
    return found, total_alerts, statuses


def log_findings(children: Sequence[Child]) -> list[str]:
    """Errors the processes logged during the run."""
    out = []
    for child in children:
        try:
            text = child.log_path.read_text(errors="replace")
        except OSError:
            continue
        counts = {
            "unhandled errors (500)": text.count("ERROR api.errors unhandled error"),
            "integrity errors (409)": text.count("INFO api.errors integrity error"),
            "failed dispatcher passes": text.count("dispatcher pass failed"),
            "'database is locked'": text.count("database is locked"),
            "deadlocks": text.count("DeadlockDetected"),
            "worker timeouts": text.count("WORKER TIMEOUT"),
        }
        found = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        if found:
            out.append(f"{child.name} log: {found}")
    return out


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server URL: a scratch database is created there and dropped after; "
        "none: SQLite in a temporary file",
    )
    parser.add_argument("--sites", type=int, default=20, help="sites, one on-call nurse each")
    parser.add_argument("--results", type=int, default=200, help="positive results (alerts)")
    parser.add_argument("--copies", type=int, default=3, help="concurrent POSTs of each result")
    parser.add_argument("--workers", type=int, default=24, help="client threads")
    parser.add_argument(
        "--spread", type=float, default=60.0, help="seconds over which the results start"
    )
    parser.add_argument(
        "--backlog", type=int, default=2000, help="participant reminders due at the burst"
    )
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn -w")
    parser.add_argument(
        "--dispatchers",
        type=int,
        default=None,
        help="extra `stepdown dispatcher` processes (PostgreSQL; default 1, SQLite 0)",
    )
    parser.add_argument(
        "--alert-sender",
        choices=("service", "none"),
        default="service",
        help="staff messages from their own Messaging Service, or from the participants' long code",
    )
    parser.add_argument(
        "--alert-rate", type=float, default=10.0, help="SMS_ALERT_RATE_PER_SECOND (assumed)"
    )
    parser.add_argument(
        "--sms-rate",
        type=float,
        default=None,
        help="SMS_RATE_PER_SECOND for the participants' long code (default: unset, 1)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.1, help="the fake's seconds to answer a creation"
    )
    parser.add_argument(
        "--callback-delay",
        type=float,
        default=0.1,
        help="the fake's seconds before 'sent' and again before 'delivered'",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="REDIS_URL ('none', or unreachable: RATELIMIT_STORAGE_URI=memory:// instead)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for SMS")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds to wait for late duplicates"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed of the order")
    parser.add_argument("--keep-logs", action="store_true", help="keep the child process logs")
    args = parser.parse_args(argv)
    if args.results % args.sites:
        parser.error("--results must be a multiple of --sites")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_cleanly_on_signals()
    started = time.monotonic()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="stepdown_alertbench_"))
    prefix = f"stepdown-alertbench-{uuid.uuid4().hex[:10]}"
    try:
        with (
            scratch_database(
                args.database_url, prefix="stepdown_alertbench", sqlite_dir=workdir, log=log
            ) as url,
            Children(workdir) as children,
        ):
            result = run(args, url, children, rng, prefix)
    finally:
        if args.redis_url != "none":
            with contextlib.suppress(Exception):
                import redis

                client = redis.Redis.from_url(args.redis_url, socket_connect_timeout=1)
                for key in client.scan_iter(match=f"{prefix}:*"):
                    client.delete(key)
                client.close()
        if args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    # After the teardown, so the RESULT line is the last one.
    log(f"total wall time {time.monotonic() - started:.0f} s (setup, burst, teardown)")
    log(result)
    return 0


def run(
    args: argparse.Namespace, url: str, children: Children, rng: random.Random, prefix: str
) -> str:
    """Seed, start the stack, write the backlog, fire the burst, collect; the RESULT line."""
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    now = datetime.now(UTC)
    per_site = args.results // args.sites
    log(
        f"database: {dialect}; {args.results} results × {args.copies} concurrent POSTs over "
        f"{args.sites} sites; {os.cpu_count()} CPUs, {load_average()}"
    )
    t = time.monotonic()
    seeded = seed(url, args.sites, per_site, warmups=8, now=now)
    log(
        f"seeded {args.sites} sites (an on-call nurse, a coordinator, an investigator each; an "
        f"admin of all), {args.results} participants (+8 for warm-up) with a negative baseline "
        f"and a lab account in {time.monotonic() - t:.1f} s; escalation routes: "
        + ("; ".join(seeded.route_warnings[:3]) or "every tier reaches someone")
    )
    t = time.monotonic()
    stack = start_stack(children, url, args, prefix)
    dispatchers = [c.name for c in stack.children if c.name.startswith(("scheduler", "dispatch"))]
    log(
        f"started in {time.monotonic() - t:.1f} s: `gunicorn -w {args.web_workers} -b "
        f"{stack.web_url.removeprefix('http://')} 'server.app:create_app()'` (sync workers), "
        f"{' + '.join(dispatchers)} (each a dispatcher: an urgent lane for staff alerts, a "
        f"routine lane), the fake Twilio {stack.fake_url} (answers after {args.latency:g} s, "
        f"status callbacks {args.callback_delay:g} s apart)"
    )
    log(
        "production settings (STEPDOWN_ENV=production, SECRET_KEY, DATABASE_URL, "
        "TWILIO_ACCOUNT_SID/AUTH_TOKEN, TWILIO_FROM_NUMBER a long code) except: "
        + ", ".join(f"{k}={v}" for k, v in stack.settings.items())
    )
    sms_rate = args.sms_rate if args.sms_rate is not None else 1.0
    log(
        f"senders: participants from the long code {PARTICIPANT_SENDER} at {sms_rate:g}/s; "
        + (
            f"staff messages from their own Messaging Service at {args.alert_rate:g}/s "
            "(assumed: a service pooling long codes, or a toll-free or short code)"
            if stack.alert_sender
            else "staff alerts from the same long code (no alert sender: the README's default)"
        )
    )
    poster = Poster(stack.web_url, seeded.token)
    warm = warm_up(poster, stack.fake_url, seeded.warmup_codes, args.workers, now, dispatcher=True)
    log(
        f"warm-up: {sum(warm.statuses.values())} negative results, statuses "
        f"{dict(sorted(warm.statuses.items()))}; 1 positive (status {warm.alert_status}), its "
        "alert SMS "
        + (
            f"at the fake {warm.alert_latency_ms:.0f} ms after its request was sent (not counted)"
            if warm.alert_latency_ms is not None
            else "never arrived"
        )
    )
    due = datetime.now(UTC)
    seconds = write_backlog(url, args.backlog, due)
    log(
        f"backlog: {args.backlog} participant reminders due at {due:%H:%M:%S} UTC written in "
        f"{seconds:.1f} s ({args.backlog / sms_rate:.0f} s of the long code's sending)"
    )

    collected = now - timedelta(days=1)
    bodies = [
        ctdna_body(code, f"POS-{code}", "positive", collected, mtm=0.42) for code in seeded.codes
    ]
    log(
        f"burst: {len(bodies) * args.copies} POSTs over ~{args.spread:g} s by {args.workers} "
        f"threads ({load_average()}) ..."
    )
    burst_wall = time.time()
    b = burst(poster, bodies, copies=args.copies, workers=args.workers, spread=args.spread, rng=rng)
    for child in stack.children:
        child.check_alive()
    every = b.attempts + b.retries
    statuses = Counter(a.status or 0 for a in b.attempts)
    errors = Counter(a.error for a in every if not a.ok and a.error)
    first_sent: dict[int, float] = {}
    first_ok: dict[int, Attempt] = {}
    for a in every:
        first_sent[a.result] = min(first_sent.get(a.result, a.sent_wall), a.sent_wall)
        if a.ok and (a.result not in first_ok or a.done_wall < first_ok[a.result].done_wall):
            first_ok[a.result] = a
    log(
        f"burst done in {b.seconds:.1f} s: statuses {dict(sorted(statuses.items()))}"
        + (f", {len(b.retries)} lab retries" if b.retries else "")
        + f"; {len(first_ok)}/{len(bodies)} results answered 2xx"
    )
    for error, n in errors.most_common(5):
        log(f"  {n} × {error}")
    log(
        summary(
            "  HTTP time of the first 2xx per result",
            [(a.done_wall - a.sent_wall) * 1000 for a in first_ok.values()],
        )
    )
    log(summary("  HTTP time of every POST", [(a.done_wall - a.sent_wall) * 1000 for a in every]))

    accessions = {f"POS-{code}" for code in seeded.codes}
    db_alerts, _, _ = read_alerts(url, accessions)
    arrivals = poll_arrivals(
        stack.fake_url, {a.ack_code for a in db_alerts.values()}, args.timeout, args.settle
    )
    db_alerts, total_alerts, outbox_statuses = read_alerts(url, accessions)

    latencies: list[float] = []
    from_answer: list[float] = []
    wait_claim: list[float] = []
    claim_to_fake: list[float] = []
    missing: dict[str, list[str]] = {}
    wrong_phone: list[str] = []
    timelines: list[tuple[float, str]] = []
    for i, code in enumerate(seeded.codes):
        db_alert = db_alerts.get(f"POS-{code}")
        arrived = arrivals.first_wall.get(db_alert.ack_code) if db_alert else None
        sent = first_sent.get(i)
        if db_alert is None or sent is None or arrived is None:
            why = (
                "no alert row"
                if db_alert is None
                else "no request sent"
                if sent is None
                else "SMS never arrived"
            )
            missing.setdefault(why, []).append(code)
            latencies.append(math.inf)
            continue
        nurse = seeded.nurse_of_site[seeded.site_of[code]]
        if {to for (c, to) in arrivals.pairs if c == db_alert.ack_code} != {nurse}:
            wrong_phone.append(code)
        latency = (arrived - sent) * 1000
        latencies.append(latency)
        ok = first_ok.get(i)
        if ok is not None:
            from_answer.append((arrived - ok.done_wall) * 1000)
        if db_alert.claimed_at is not None:
            wait_claim.append((db_alert.claimed_at - sent) * 1000)
            claim_to_fake.append((arrived - db_alert.claimed_at) * 1000)

        def rel(moment: float | None, zero: float = sent) -> str:
            return "?" if moment is None else f"{(moment - zero) * 1000:+.0f}"

        timelines.append(
            (
                latency,
                f"  {code} alert {db_alert.alert_id}: request sent 0, outbox row written "
                f"{rel(db_alert.enqueued_at)}, first 2xx {rel(ok.done_wall if ok else None)}, "
                f"claimed {rel(db_alert.claimed_at)}, accepted by the fake {rel(arrived)} (an "
                f"SMS with {arrivals.first_codes[db_alert.ack_code]} code(s) from "
                f"{arrivals.first_sender[db_alert.ack_code][:12]}) ms",
            )
        )

    shared = Counter(a.ack_code for a in db_alerts.values())
    collisions = sorted(code for code, n in shared.items() if n > 1)
    arrived_alerts = sum(1 for a in db_alerts.values() if a.ack_code in arrivals.first_wall)
    ours = {a.ack_code for a in db_alerts.values()}
    duplicates = sum(1 for n in arrivals.pairs.values() if n > 1)
    our_duplicates = sum(1 for (c, _), n in arrivals.pairs.items() if n > 1 and c in ours)
    sms_rows = Counter(a.sms_rows for a in db_alerts.values())
    in_burst = [t for t in arrivals.reminders_at if t >= burst_wall]
    log(
        f"fake Twilio: {arrivals.messages} SMS accepted ({arrivals.bundles} bundles, "
        f"{arrivals.without_code} reminders); {arrived_alerts}/{len(bodies)} alerts' codes "
        f"arrived; status callbacks made (status, app's answer): "
        f"{dict(sorted(arrivals.callbacks.items()))}"
    )
    for sender, times in sorted(arrivals.by_sender.items()):
        label = "participants' long code" if sender == PARTICIPANT_SENDER else "staff sender"
        log(rate_line(f"  {label} {sender[:12]}", times))
    if in_burst:
        log(
            f"  reminders accepted from the burst's start to the last alert: "
            f"{sum(1 for t in in_burst if t <= max(arrivals.first_wall.values(), default=0))}"
        )
    log(
        f"database: {total_alerts} alert rows ({len(db_alerts)} for the burst's results, 1 for "
        f"the warm-up), tier-1 SMS rows per alert {dict(sorted(sms_rows.items()))}, staff alert "
        f"outbox by status {dict(sorted(outbox_statuses.items()))}"
    )
    for why, codes in missing.items():
        log(f"{why}: {len(codes)} results, e.g. {', '.join(codes[:10])}")
    for line in log_findings(children.children):
        log(line)
    log(summary("latency request sent → SMS accepted by the fake", latencies))
    for line in histogram(latencies):
        log(line)
    log(summary("  first 2xx → SMS accepted (the old measure)", from_answer))
    log(summary("  request sent → dispatcher claimed it", wait_claim))
    log(summary("  claimed → SMS accepted (slot wait, the fake's latency)", claim_to_fake))
    log("slowest alerts (ms from the request sent; the outbox row's time is the web worker's):")
    for _, line in sorted(timelines, reverse=True)[:5]:
        log(line)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    target = TARGET_P99_MS.get(dialect, math.inf)
    failed = [
        what
        for what, bad in (
            (f"p99 {fmt_ms(p99)} ms ≥ {target:.0f} ms", p99 >= target),
            (f"{arrived_alerts} alerts arrived, not {len(bodies)}", arrived_alerts != len(bodies)),
            (
                f"{duplicates} duplicate SMS ({our_duplicates} of the burst's alerts)",
                duplicates != 0,
            ),
            (f"{total_alerts} alert rows, not {len(bodies) + 1}", total_alerts != len(bodies) + 1),
            (
                "not exactly one tier-1 SMS row per alert",
                sms_rows != Counter({1: len(bodies)}),
            ),
            (f"{len(collisions)} ack codes shared by several alerts", bool(collisions)),
            (f"{len(wrong_phone)} alerts' codes reached another phone", bool(wrong_phone)),
        )
        if bad
    ]
    log(
        f"target ({dialect}): p99 < {target:.0f} ms, {len(bodies)} alerts, 0 duplicate SMS, "
        f"one alert row and one tier-1 SMS row per result, each to its site's on-call nurse → "
        + ("met" if not failed else "not met: " + "; ".join(failed))
    )
    return (
        f"RESULT p50_ms={fmt_ms(p50)} p99_ms={fmt_ms(p99)} alerts={arrived_alerts} "
        f"duplicate_sms={duplicates}"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; child processes stopped, scratch database removed", file=sys.stderr)
        sys.exit(130)
