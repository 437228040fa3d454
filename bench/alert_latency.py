"""Alert latency benchmark: a ctDNA result turns positive → the first nurse SMS reaches the SMS
provider (PRODUCT.md, "Targets": p99 under 2 s on SQLite, under 0.5 s on PostgreSQL; and
reliability-security.md §2.A.1: 200 results, each posted 3× concurrently, 0 duplicate SMS).

    .venv/bin/python bench/alert_latency.py                    # SQLite, in a temporary file
    .venv/bin/python bench/alert_latency.py --database-url postgresql://postgres@127.0.0.1:5432/test

Everything runs as it does in production, each part in its own process on a free 127.0.0.1 port:
the fake Twilio (`python -m notifications.fake_twilio`), the web app under gunicorn (gthread,
2 workers × 8 threads) and `stepdown scheduler` (APScheduler jobs + the SMS dispatcher thread;
woken by LISTEN/NOTIFY on PostgreSQL, polling every 0.5 s on SQLite). They share one
environment: DATABASE_URL, SMS_PROVIDER=fake, TWILIO_BASE_URL = the fake, a Messaging Service SID
(MG…) and SMS_RATE_PER_SECOND=100 (a Messaging Service / short code is allowed that; a single
long code would send ~1/s). The PostgreSQL run creates a database `stepdown_alertbench_<random>`
on that server and drops it at the end, even on error or Ctrl-C; every child process is stopped
too. The burst starts once the scheduler's first pass of jobs has finished, the web workers have
served a few negative results (no alert), and one warm-up alert has gone out: the dispatcher's
first send after start-up pays lazy imports, which is reported but not counted
(`--cold-dispatcher` skips this warm-up alert, to measure a freshly started dispatcher).

Seeding goes through the real services: one site, the HEROES study, an on-call nurse with a
verified phone (plus a coordinator, an investigator and an admin with verified phones, so no
escalation route is dead), a coordinator API account for the lab with a bearer token, and N
participants (cohort stop), each with a NEGATIVE baseline ctDNA result already recorded.

Measured: N positive results POSTed to /api/v1/results/ctdna, each 3 times at the same instant
(a lab retrying), start times spread at random over --spread seconds, by a pool of --workers
threads. For each result, t0 = when the client got the FIRST 2xx answer (time.time()). For each
alert, t1 = when the fake received the first SMS carrying its ack code (the fake's `received_at`,
a wall-clock UTC timestamp, so the same clock as time.time() on this machine; its
`received_monotonic` is used as a cross-check). Latency = t1 − t0. An SMS may carry one code
("Reply ACK 1234") or several (a bundle, "… (ACK 1234), … (ACK 5678)"): every 4-digit code after
"ACK" counts. duplicate_sms = (ack code, phone) pairs that reached the fake more than once.
The last line is `RESULT p50_ms=… p99_ms=… alerts=… duplicate_sms=…`; percentiles are
nearest-rank over the N expected alerts, an alert whose SMS never arrived counting as infinite.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import requests
import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from sqlmodel import Session, col, select

from api.schemas import CtdnaResultSchema
from config.settings import DevelopmentConfig
from notifications.models import MessageCategory, MessageLog, MessageStatus, OutboxMessage
from server import migrate
from server.alerts import service as alert_service
from server.alerts.models import Alert
from server.app import create_app
from server.auth import service as auth_service
from server.auth.models import Role, SiteMembership
from server.db import get_db, make_engine, normalise_url
from server.participants import service as participant_service
from server.participants.models import Locale, ParticipantStatus
from server.protocols.models import Study
from server.results import service as result_service
from server.results.models import LabResult, ResultKind
from server.scheduler import job_specs

ROOT = Path(__file__).resolve().parent.parent
LAB = "natera"
STUDY = "HEROES"
SITE_TZ = "Europe/Paris"
NURSE_PHONE = "+33610000001"
OTHER_STAFF = (  # role, phone: every escalation tier reaches someone (no dead-route alerts)
    (Role.COORDINATOR, "+33610000002"),
    (Role.INVESTIGATOR, "+33610000003"),
    (Role.ADMIN, "+33610000004"),
)
PASSWORD = "alert-latency-bench-password"
ACK_RE = re.compile(r"\bACK\s+(\d{6}|\d{4})\b")
TARGET_P99_MS = {"sqlite": 2000.0, "postgresql": 500.0}


# --- small helpers --------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, flush=True)


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
    edges = [50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 60000.0, math.inf]
    counts = Counter(next(e for e in edges if v < e or math.isinf(e)) for v in values_ms)
    lines, low = [], "     "
    for edge in edges:
        n = counts.get(edge, 0)
        label = f"{low} < {edge:>5.0f} ms" if not math.isinf(edge) else "never arrived  "
        lines.append(f"  {label} {n:>4}  {'#' * math.ceil(60 * n / max(1, len(values_ms)))}")
        low = f"{edge:>5.0f}"
    return lines


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def utc(moment: datetime) -> datetime:
    """SQLite gives naive datetimes (stored as UTC); PostgreSQL aware ones."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def exit_cleanly_on_signals() -> None:
    """SIGTERM and SIGHUP become SystemExit and SIGINT KeyboardInterrupt (even when the shell
    started us with SIGINT ignored), so the `finally` blocks stop the child processes and drop
    the scratch database."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        print(f"signal {signum}: stopping", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)
    signal.signal(signal.SIGINT, signal.default_int_handler)


# --- the scratch database -------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(server_url: str | None, workdir: Path) -> Iterator[str]:
    """A freshly migrated database: a SQLite file in `workdir`, or a new PostgreSQL database
    `stepdown_alertbench_<random>` on the given server, dropped afterwards even on error."""
    if server_url is None:
        url = f"sqlite:///{workdir / 'alertbench.db'}"
        migrate.upgrade(url)
        yield url
        return
    if not normalise_url(server_url).startswith("postgresql"):
        raise SystemExit("--database-url must name a PostgreSQL server (SQLite is the default)")
    name = f"stepdown_alertbench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    log(f"created database {name}")
    try:
        url = (
            sa.make_url(normalise_url(server_url))
            .set(database=name)
            .render_as_string(hide_password=False)
        )
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        log(f"dropped database {name}")


# --- child processes ------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with status {self.popen.returncode}:\n{self.tail()}"
            )


class Children:
    """Child processes, each in its own session (process group), all stopped on exit: SIGTERM
    to the group, then SIGKILL to whatever is left; nothing is left behind."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = self.logdir / f"{name}.log"
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, popen, log_path)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            self._stop(child)
        self.children.clear()

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _stop(self, child: Child) -> None:
        pgid = child.popen.pid  # start_new_session: the child leads its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            child.popen.poll()
            if child.popen.returncode is not None and not self._group_alive(pgid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        child.popen.wait(timeout=5)
        log(f"{child.name}: did not stop on SIGTERM within 10 s; killed")

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_for(what: str, predicate: Any, children: Sequence[Child], timeout: float) -> Any:
    """Poll predicate() until it returns something truthy; fail early if a child died."""
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            child.check_alive()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"  {c.name}:\n{c.tail()}" for c in children)
            raise RuntimeError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.05)


def stepdown_command() -> list[str]:
    script = Path(sys.executable).parent / "stepdown"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from server.cli import main; main()"]


@dataclass
class Stack:
    fake_url: str
    web_url: str
    children: list[Child]


def start_stack(children: Children, url: str, args: argparse.Namespace) -> Stack:
    """The fake Twilio, the web app and the scheduler, sharing one environment."""
    account_sid = "AC" + secrets.token_hex(16)
    auth_token = secrets.token_hex(16)
    service_sid = "MG" + secrets.token_hex(16)
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
            service_sid,
            "--no-callbacks",
        ],
        {**os.environ, "PYTHONUNBUFFERED": "1"},
    )

    def fake_url() -> str | None:
        found = re.search(r"fake Twilio on (http://\S+)", fake.log_path.read_text(errors="replace"))
        return found.group(1) if found else None

    fake_base = str(wait_for("the fake Twilio", fake_url, [fake], 20))
    web_port = free_port()
    web_base = f"http://127.0.0.1:{web_port}"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "STEPDOWN_ENV": "development",
        "DATABASE_URL": url,
        "SMS_PROVIDER": "fake",
        "TWILIO_BASE_URL": fake_base,
        "TWILIO_ACCOUNT_SID": account_sid,
        "TWILIO_AUTH_TOKEN": auth_token,
        "TWILIO_MESSAGING_SERVICE_SID": service_sid,
        "SMS_RATE_PER_SECOND": str(args.sms_rate),
        "PUBLIC_BASE_URL": web_base,
    }
    web = children.start(
        "web",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{web_port}",
            "--workers",
            str(args.web_workers),
            "--threads",
            str(args.web_threads),
            "--worker-class",
            "gthread",
            "--graceful-timeout",
            "5",
            "--timeout",
            "60",
            # gunicorn ≥ 24 listens on a control socket at one fixed path per user: not ours.
            *(["--no-control-socket"] if importlib.util.find_spec("gunicorn.ctl") else []),
            "server.app:create_app()",
        ],
        env,
    )
    scheduler = children.start("scheduler", [*stepdown_command(), "scheduler"], env)
    running = [fake, web, scheduler]

    def web_ready() -> bool:
        try:
            return requests.get(f"{web_base}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for("the web app (/healthz)", web_ready, running, 60)
    # The scheduler runs every job once at start; let that first pass finish so the burst is
    # measured against a scheduler in its steady state, not against its start-up work.
    job_ids = [spec.id for spec in job_specs()]

    def first_pass_done() -> bool:
        text = scheduler.log_path.read_text(errors="replace")
        return "scheduler running" in text and all(f"job {j}:" in text for j in job_ids)

    wait_for("the scheduler's first pass of jobs", first_pass_done, running, 120)
    return Stack(fake_base, web_base, running)


# --- seeding --------------------------------------------------------------------------------


@dataclass
class Seeded:
    token: str
    codes: list[str]
    warmup_codes: list[str]
    nurse_phone: str
    route_warnings: list[str]


def app_config(url: str) -> dict[str, Any]:
    config = DevelopmentConfig().as_dict()
    config.update(DATABASE_URL=url, SMS_PROVIDER="fake", DEBUG=False)
    return config


def seed(url: str, participants: int, warmups: int, now: datetime) -> Seeded:
    """Site, study, staff, lab account + token, participants with a negative baseline; all
    through the real services."""
    app = create_app(app_config(url))
    schema = CtdnaResultSchema()
    anchor = now.date() - timedelta(days=30)
    baseline_at = datetime.combine(anchor - timedelta(days=7), datetime.min.time(), tzinfo=UTC)
    try:
        with app.app_context(), get_db(app).job_session() as session:
            site = auth_service.create_site(
                session=session,
                actor=None,
                code="BENCH-01",
                name="Alert latency bench site",
                country="FR",
                timezone=SITE_TZ,
                now=now,
            )
            assert site.id is not None
            session.add(Study(key=STUDY, title="HEROES", protocol_key="heroes", created_at=now))
            session.flush()

            def staff(email: str, role: Role, phone: str | None) -> Any:
                return auth_service.create_user(
                    session=session,
                    actor=None,
                    email=email,
                    full_name=email.split("@")[0],
                    password=PASSWORD,
                    role=role,
                    site_ids=[site.id],  # type: ignore[list-item]
                    phone_e164=phone,
                    is_phone_verified=phone is not None,
                    now=now,
                )

            nurse = staff("nurse@alertbench.test", Role.NURSE, NURSE_PHONE)
            for role, phone in OTHER_STAFF:
                staff(f"{role.value}@alertbench.test", role, phone)
            lab = staff("lab@alertbench.test", Role.COORDINATOR, None)
            membership = session.exec(
                select(SiteMembership).where(
                    SiteMembership.user_id == nurse.id, SiteMembership.site_id == site.id
                )
            ).one()
            membership.is_on_call = True
            session.add(membership)
            session.flush()

            codes = [f"AB-{i:04d}" for i in range(1, participants + 1)]
            warmup_codes = [f"WU-{i:02d}" for i in range(1, warmups + 1)]
            for code in [*codes, *warmup_codes]:
                participant_service.enroll(
                    session=session,
                    user=lab,
                    study=STUDY,
                    site_id=site.id,
                    study_code=code,
                    timezone=None,
                    cohort="stop",
                    anchor_date=anchor,
                    status=ParticipantStatus.OFF_TREATMENT_MONITORING,
                    locale=Locale.FR,
                    phone=None,
                    has_sms_consent=False,
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
            warnings = [
                f"{t['route']} tier {t['tier']}: {t['warning']}"
                for t in alert_service.route_health(session, site)
                if t["warning"]
            ]
    finally:
        get_db(app).engine.dispose()
    return Seeded(token, codes, warmup_codes, NURSE_PHONE, warnings)


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
            latency = (min(arrivals.first_wall.values()) - first.done_wall) * 1000
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
    first_wall: dict[str, float]  # ack code → first receive time (time.time() scale)
    first_mono: dict[str, float]
    first_codes: dict[str, int]  # ack code → how many codes the SMS that first carried it had
    pairs: Counter[tuple[str, str]]  # (ack code, phone) → SMS count
    messages: int
    bundles: int
    without_code: int


def fetch_arrivals(fake_url: str) -> Arrivals:
    messages = requests.get(f"{fake_url}/_fake/messages", timeout=10).json()
    first_wall: dict[str, float] = {}
    first_mono: dict[str, float] = {}
    first_codes: dict[str, int] = {}
    pairs: Counter[tuple[str, str]] = Counter()
    bundles = without_code = 0
    for m in messages:
        codes = ACK_RE.findall(m["body"])
        if not codes:
            without_code += 1
        bundles += len(set(codes)) > 1
        at_wall = datetime.fromisoformat(m["received_at"]).timestamp()
        at_mono = float(m["received_monotonic"])
        for code in set(codes):
            pairs[(code, m["to"])] += 1
            if code not in first_wall or at_wall < first_wall[code]:
                first_wall[code] = at_wall
                first_mono[code] = at_mono
                first_codes[code] = len(set(codes))
    return Arrivals(
        first_wall, first_mono, first_codes, pairs, len(messages), bundles, without_code
    )


def poll_arrivals(fake_url: str, codes: set[str], timeout: float, settle: float) -> Arrivals:
    """Poll until every code arrived (or timeout), then wait `settle` s for late duplicates."""
    deadline = time.monotonic() + timeout
    arrivals = fetch_arrivals(fake_url)
    while not codes <= arrivals.first_wall.keys() and time.monotonic() < deadline:
        time.sleep(0.1)
        arrivals = fetch_arrivals(fake_url)
    time.sleep(settle)
    return fetch_arrivals(fake_url)


# --- what the database says -----------------------------------------------------------------


@dataclass
class DbAlert:
    alert_id: int
    ack_code: str
    accession: str
    sms_rows: int = 0
    sms_status: str | None = None
    lease_until: float | None = None
    enqueued_at: float | None = None  # the request's clock when it wrote the outbox row
    claimed_at: float | None = None  # the dispatcher's claim (status → sending)
    recorded_sent_at: float | None = None  # the dispatcher recorded the provider's answer


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
                a.sms_status = m.status.value
                if m.lease_until_at is not None:
                    a.lease_until = utc(m.lease_until_at).timestamp()
                ids[m.id] = a
                created = utc(m.created_at).timestamp()
                a.enqueued_at = min(a.enqueued_at or created, created)
            for entry in session.exec(
                select(MessageLog).where(col(MessageLog.message_id).in_(list(ids)))
            ).all():
                a = ids[entry.message_id]
                at = utc(entry.at).timestamp()
                if entry.status == MessageStatus.SENDING:
                    a.claimed_at = max(a.claimed_at or at, at)  # the claim that sent it
                elif entry.status == MessageStatus.SENT:
                    a.recorded_sent_at = min(a.recorded_sent_at or at, at)
    finally:
        engine.dispose()
    return found, total_alerts, statuses


def log_findings(children: Sequence[Child]) -> list[str]:
    """Errors the web app and the scheduler logged during the run."""
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
            "'database is locked'": text.count("sqlite3.OperationalError: database is locked"),
            "deadlocks": text.count("DeadlockDetected"),
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
    parser.add_argument("--results", type=int, default=200, help="positive results (alerts)")
    parser.add_argument("--copies", type=int, default=3, help="concurrent POSTs of each result")
    parser.add_argument("--workers", type=int, default=24, help="client threads")
    parser.add_argument(
        "--spread", type=float, default=5.0, help="seconds over which the results start"
    )
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--web-threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument(
        "--sms-rate", type=float, default=100.0, help="SMS_RATE_PER_SECOND for the dispatcher"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for SMS")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds to wait for late duplicates"
    )
    parser.add_argument(
        "--cold-dispatcher",
        action="store_true",
        help="no warm-up alert: the burst's first SMS is the dispatcher's first send",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed of the order")
    parser.add_argument("--keep-logs", action="store_true", help="keep the child process logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_cleanly_on_signals()
    started = time.monotonic()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="stepdown_alertbench_"))
    try:
        with scratch_database(args.database_url, workdir) as url, Children(workdir) as children:
            result = run(args, url, children, rng)
    finally:
        if args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    # After the teardown, so the RESULT line is the last one.
    log(f"total wall time {time.monotonic() - started:.0f} s (setup, burst, teardown)")
    log(result)
    return 0


def run(args: argparse.Namespace, url: str, children: Children, rng: random.Random) -> str:
    """Seed, start the stack, fire the burst, collect; returns the RESULT line."""
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    now = datetime.now(UTC)
    log(
        f"database: {dialect}; {args.results} results × {args.copies} concurrent POSTs; "
        f"{os.cpu_count()} CPUs, {load_average()}"
    )
    t = time.monotonic()
    seeded = seed(url, args.results, warmups=8, now=now)
    log(
        f"seeded {args.results} participants (+8 for warm-up) with a negative baseline, an "
        f"on-call nurse and a lab account in {time.monotonic() - t:.1f} s; escalation routes: "
        + ("; ".join(seeded.route_warnings) or "every tier reaches someone")
    )
    t = time.monotonic()
    stack = start_stack(children, url, args)
    log(
        f"started in {time.monotonic() - t:.1f} s: fake Twilio {stack.fake_url} (Messaging "
        f"Service MG…, SMS_RATE_PER_SECOND={args.sms_rate:g}: a Messaging Service / short code "
        f"is allowed that rate, a single long code ~1/s), gunicorn {stack.web_url} "
        f"({args.web_workers} workers × {args.web_threads} threads, gthread), stepdown "
        f"scheduler (dispatcher woken by "
        + ("LISTEN/NOTIFY)" if dialect == "postgresql" else "polling every 0.5 s)")
    )
    poster = Poster(stack.web_url, seeded.token)
    warm = warm_up(
        poster,
        stack.fake_url,
        seeded.warmup_codes,
        args.workers,
        now,
        dispatcher=not args.cold_dispatcher,
    )
    warm_alerts = 0 if args.cold_dispatcher else 1
    log(
        f"warm-up: {sum(warm.statuses.values())} negative results, statuses "
        f"{dict(sorted(warm.statuses.items()))}; "
        + (
            "no positive: the burst meets a dispatcher that has sent nothing yet"
            if args.cold_dispatcher
            else f"1 positive (status {warm.alert_status}), its alert SMS (the dispatcher's "
            "first send) "
            + (
                f"at the fake {warm.alert_latency_ms:.0f} ms after the 2xx (not counted)"
                if warm.alert_latency_ms is not None
                else "never arrived"
            )
        )
    )

    collected = now - timedelta(days=1)
    bodies = [
        ctdna_body(code, f"POS-{code}", "positive", collected, mtm=0.42) for code in seeded.codes
    ]
    log(
        f"burst: {len(bodies) * args.copies} POSTs over ~{args.spread:g} s by {args.workers} "
        f"threads ({load_average()}) ..."
    )
    b = burst(poster, bodies, copies=args.copies, workers=args.workers, spread=args.spread, rng=rng)
    for child in stack.children:
        child.check_alive()
    every = b.attempts + b.retries
    statuses = Counter(a.status or 0 for a in b.attempts)
    errors = Counter(a.error for a in every if not a.ok and a.error)
    first_ok: dict[int, Attempt] = {}
    for a in every:
        if a.ok and (a.result not in first_ok or a.done_wall < first_ok[a.result].done_wall):
            first_ok[a.result] = a
    api_alert_ids: dict[int, set[int]] = {}
    for a in every:
        if a.ok and a.alert_id is not None:
            api_alert_ids.setdefault(a.result, set()).add(a.alert_id)
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
    by_code = {a.ack_code: a for a in db_alerts.values()}
    arrivals = poll_arrivals(stack.fake_url, set(by_code), args.timeout, args.settle)
    db_alerts, total_alerts, outbox_statuses = read_alerts(url, accessions)

    latencies: list[float] = []
    from_send: list[float] = []
    clock_gap = 0.0
    wait_claim: list[float] = []
    claim_to_fake: list[float] = []
    missing: dict[str, list[str]] = {}
    timelines: list[tuple[float, str]] = []
    for i, code in enumerate(seeded.codes):
        db_alert = db_alerts.get(f"POS-{code}")
        first = first_ok.get(i)
        arrived = arrivals.first_wall.get(db_alert.ack_code) if db_alert else None
        if db_alert is None or first is None or arrived is None:
            why = (
                "no 2xx answer"
                if first is None
                else "no alert row"
                if db_alert is None
                else "SMS never arrived"
            )
            missing.setdefault(why, []).append(code)
            latencies.append(math.inf)
            continue
        latency = (arrived - first.done_wall) * 1000
        latencies.append(latency)
        from_send.append((arrived - first.sent_wall) * 1000)
        mono = (arrivals.first_mono[db_alert.ack_code] - first.done_mono) * 1000
        clock_gap = max(clock_gap, abs(mono - latency))
        if db_alert.claimed_at is not None:
            wait_claim.append((db_alert.claimed_at - first.done_wall) * 1000)
            claim_to_fake.append((arrived - db_alert.claimed_at) * 1000)

        def rel(moment: float | None, zero: float = first.done_wall) -> str:
            return "?" if moment is None else f"{(moment - zero) * 1000:+.0f}"

        timelines.append(
            (
                latency,
                f"  {code} alert {db_alert.alert_id}: request sent {rel(first.sent_wall)}, "
                f"outbox row written {rel(db_alert.enqueued_at)}, first 2xx 0, claimed "
                f"{rel(db_alert.claimed_at)}, at the fake {rel(arrived)} (in an SMS with "
                f"{arrivals.first_codes[db_alert.ack_code]} code(s)), sent recorded "
                f"{rel(db_alert.recorded_sent_at)} ms",
            )
        )

    mismatched = sum(
        1
        for i, code in enumerate(seeded.codes)
        if (ids := api_alert_ids.get(i))
        and (f"POS-{code}" not in db_alerts or ids != {db_alerts[f"POS-{code}"].alert_id})
    )
    ours = {a.ack_code for a in db_alerts.values()}
    shared = Counter(a.ack_code for a in db_alerts.values())
    collisions = sorted(code for code, n in shared.items() if n > 1)
    if collisions:
        log(
            f"WARNING: {len(collisions)} ack codes are shared by several open alerts "
            f"({', '.join(collisions[:10])}): their arrivals and duplicates cannot be told apart"
        )
    arrived_alerts = sum(1 for a in db_alerts.values() if a.ack_code in arrivals.first_wall)
    duplicates = sum(1 for n in arrivals.pairs.values() if n > 1)
    our_duplicates = sum(1 for (c, _), n in arrivals.pairs.items() if n > 1 and c in ours)
    sms_rows = Counter(a.sms_rows for a in db_alerts.values())
    recipients = {to for code, to in arrivals.pairs if code in ours}

    log(
        f"fake Twilio: {arrivals.messages} SMS incl. {warm_alerts} from the warm-up "
        f"({arrivals.bundles} bundles, "
        f"{arrivals.without_code} without an ACK code); {arrived_alerts}/{len(bodies)} alerts' "
        f"codes arrived; recipients {sorted(recipients)}"
    )
    log(
        f"database: {total_alerts} alert rows ({len(db_alerts)} for the burst's results, "
        f"{warm_alerts} for the warm-up), "
        f"tier-1 SMS rows per alert {dict(sorted(sms_rows.items()))}, staff alert outbox by "
        f"status {dict(sorted(outbox_statuses.items()))}; API alert_id ≠ database: {mismatched}"
    )
    for why, codes in missing.items():
        log(f"{why}: {len(codes)} results, e.g. {', '.join(codes[:10])}")
    if missing:
        stuck = [
            a
            for a in db_alerts.values()
            if a.sms_status == MessageStatus.SENDING.value and a.ack_code not in arrivals.first_wall
        ]
        if stuck:
            leases = [a.lease_until for a in stuck if a.lease_until is not None]
            log(
                f"  {len(stuck)} alerts' SMS were claimed by the dispatcher and left in 'sending'"
                + (
                    f", leased for {max(leases) - time.time():.0f} s more: the reaper only "
                    "retries a message once its lease has expired"
                    if leases
                    else ""
                )
            )
    for line in log_findings(children.children):
        log(line)
    log(summary("latency first 2xx → SMS at the fake", latencies))
    for line in histogram(latencies):
        log(line)
    log(summary("latency request sent → SMS at the fake", from_send))
    log(summary("  first 2xx → dispatcher claimed it", wait_claim))
    log(summary("  dispatcher claimed it → SMS at the fake", claim_to_fake))
    log("slowest alerts (ms from the first 2xx; the outbox row's time is the request's clock):")
    for _, line in sorted(timelines, reverse=True)[:5]:
        log(line)
    log(
        f"clocks: wall-clock (time.time / received_at) and monotonic latencies differ by at most "
        f"{clock_gap:.1f} ms"
    )
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
            (
                f"{total_alerts} alert rows, not {len(bodies) + warm_alerts}",
                total_alerts != len(bodies) + warm_alerts,
            ),
            (
                "not exactly one tier-1 SMS row per alert",
                sms_rows != Counter({1: len(bodies)}),
            ),
            (f"{mismatched} API alert ids differ from the database", mismatched != 0),
            (f"{len(collisions)} ack codes shared by several alerts", bool(collisions)),
            (
                f"SMS to {sorted(recipients - {seeded.nurse_phone})}, not only the on-call nurse",
                bool(recipients - {seeded.nurse_phone}),
            ),
        )
        if bad
    ]
    log(
        f"target ({dialect}): p99 < {target:.0f} ms, {len(bodies)} alerts, 0 duplicate SMS, "
        f"one alert row and one tier-1 SMS row per result → "
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
