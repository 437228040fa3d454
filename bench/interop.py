"""HL7 v2 in and CDISC ODM out, measured: ORU^R01 messages over a real MLLP connection, then the
study exported as ODM 1.3.2 and validated against the XSD.

    .venv/bin/python bench/interop.py                      # SQLite, in a temporary file
    .venv/bin/python bench/interop.py --database-url postgresql://postgres@127.0.0.1:5432/test

The data, through the real services: one Paris site, HEROES, `--participants` participants
(default 100) enrolled with an anchor 90 days ago, so their schedules hold planned, open and past
events. The MLLP listener (`server.mllp.MllpServer`, as `stepdown mllp` runs it) serves on a free
127.0.0.1 port in this process; one client connection (as an integration engine keeps one) sends
`--messages` Signatera ORU^R01 (default 300; each a negative ctDNA result for a participant, every
tenth positive, which opens an alert and queues its SMS) one after the other, each waiting for its
ACK. Latency = send to ACK received, per message. Then the same messages are sent again (the
engine's retries after a lost ACK): each must be AA and change nothing (`duplicates` = result rows
beyond one per accession). Then `stepdown export odm`'s code path exports the study and the
document is validated against tests/exports/odm1-3-2/ODM1-3-2.xsd.

Last line: `RESULT mllp_p50_ms=… mllp_p99_ms=… mllp_msgs_per_s=… acks_aa=… duplicates=…
odm_export_s=… odm_kb=… odm_subjects=… odm_items=… odm_valid=…`.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import func, select

from bench._common import (
    Stopwatch,
    exit_cleanly_on_sigterm,
    median,
    percentile,
    scratch_database,
)
from config.settings import DevelopmentConfig
from server.app import create_app
from server.auth import service as auth_service
from server.auth.models import Role
from server.db import get_db
from server.exports import odm
from server.mllp import MllpServer, frame
from server.participants import service as participant_service
from server.participants.models import Locale, ParticipantStatus
from server.protocols.models import Study
from server.results.models import LabResult

XSD = Path(__file__).resolve().parent.parent / "tests" / "exports" / "odm1-3-2" / "ODM1-3-2.xsd"


class BenchConfig(DevelopmentConfig):
    DEBUG = False


def log(line: str) -> None:
    print(line, flush=True)


def oru(n: int, code: str, collected: datetime, reported: datetime, positive: bool) -> str:
    dtm = "%Y%m%d%H%M%S+0000"
    call = "POS^Positive^HL70078" if positive else "NEG^Negative^HL70078"
    return "\r".join(
        [
            f"MSH|^~\\&|SIGNATERA|NATERA|STEPDOWN|PARIS-01|{reported:{dtm}}||ORU^R01^ORU_R01|"
            f"BENCH-{n}|P|2.5.1|||NE|AL",
            f"PID|1||{code}^^^HEROES^RI",
            f"ORC|RE|ORD-{n}|NT-BENCH-{n}^NATERA||CM",
            f"OBR|1|ORD-{n}|NT-BENCH-{n}^NATERA|SIGNATERA^Signatera ctDNA^L|||{collected:{dtm}}"
            f"|||||||||||||||{reported:{dtm}}||LAB|F",
            f"OBX|1|CWE|SIGNATERA-CALL^Signatera ctDNA call^L||{call}||||||F",
            f"OBX|2|NM|SIGNATERA-MTM^MTM/mL^L||{0.8 if positive else 0.0}|{{MTM}}/mL^^UCUM|||||F",
        ]
    )


def build(app: object, participants: int, now: datetime) -> list[str]:
    codes = []
    with get_db(app).job_session() as session:  # type: ignore[arg-type]
        site = auth_service.create_site(
            session=session,
            actor=None,
            code="PARIS-01",
            name="Paris",
            country="FR",
            timezone="Europe/Paris",
            failsafe_role="investigator",  # required before enrolment (issue 16)
            now=now,
        )
        assert site.id is not None
        study = Study(key="HEROES", title="HEROES", protocol_key="heroes", created_at=now)
        session.add(study)
        session.flush()
        user = auth_service.create_user(
            session=session,
            actor=None,
            email="coordinator@bench.test",
            full_name="Bench Coordinator",
            password="bench-password-not-used",
            role=Role.COORDINATOR,
            site_ids=[site.id],
            now=now,
        )
        anchor = (now - timedelta(days=90)).date()
        for i in range(participants):
            code = f"HER-{i:04d}"
            participant_service.enroll(
                session=session,
                user=user,
                study="HEROES",
                site_id=site.id,
                study_code=code,
                now=now,
                timezone="Europe/Paris",
                cohort="stop",
                anchor_date=anchor,
                status=ParticipantStatus.OFF_TREATMENT_MONITORING,
                locale=Locale.FR,
                phone=None,
                has_sms_consent=False,
            )
            codes.append(code)
    return codes


def exchange(sock: socket.socket, message: str) -> tuple[str, float]:
    start = time.perf_counter()
    sock.sendall(frame(message))
    data = b""
    while not data.endswith(b"\x1c\r"):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the listener closed the connection")
        data += chunk
    ack = data[1:-2].decode()
    return ack, time.perf_counter() - start


def ack_code(ack: str) -> str:
    return next(s for s in ack.split("\r") if s.startswith("MSA|")).split("|")[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database-url", help="a PostgreSQL server (default: SQLite)")
    parser.add_argument("--participants", type=int, default=100)
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    now = datetime.now(UTC).replace(microsecond=0)
    with scratch_database(args.database_url, prefix="stepdown_interop") as url:
        config = BenchConfig()
        config.DATABASE_URL = url
        app = create_app(config)
        watch = Stopwatch()
        codes = build(app, args.participants, now)
        log(
            f"database: {get_db(app).engine.dialect.name}; {len(codes)} participants enrolled "
            f"in {watch.seconds():.1f} s"
        )
        messages = [
            oru(
                n,
                codes[n % len(codes)],
                now - timedelta(days=2, minutes=n),
                now - timedelta(hours=1),
                positive=n % 10 == 9,
            )
            for n in range(args.messages)
        ]
        server = MllpServer(app, ("127.0.0.1", 0))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        latencies: list[float] = []
        codes_seen: dict[str, int] = {}
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                exchange(sock, messages[0])  # warm-up (its result counts like the others)
                watch = Stopwatch()
                for message in messages[1:]:
                    ack, seconds = exchange(sock, message)
                    latencies.append(seconds * 1000)
                    codes_seen[ack_code(ack)] = codes_seen.get(ack_code(ack), 0) + 1
                elapsed = watch.seconds()
                retries = [ack_code(exchange(sock, m)[0]) for m in messages]
        finally:
            server.shutdown()
            server.server_close()
        rate = len(latencies) / elapsed if elapsed else 0.0
        log(
            f"MLLP: {len(latencies)} messages after one warm-up, one connection: p50 "
            f"{median(latencies):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, max "
            f"{max(latencies):.1f} ms, {rate:.1f} messages/s; ACKs {codes_seen}"
        )
        with get_db(app).job_session() as session:
            rows = session.exec(select(func.count()).select_from(LabResult)).one()
            study = session.exec(select(Study).where(Study.key == "HEROES")).one()
            duplicates = rows - len(messages)
            log(
                f"retries: {len(retries)} sent again, {retries.count('AA')} AA; result rows "
                f"{rows} for {len(messages)} accessions (duplicates {duplicates})"
            )
            watch = Stopwatch()
            export = odm.build(session=session, study=study, site_ids=None, now=now)
            export_s = watch.seconds()
        log(
            f"ODM export: {export_s:.2f} s, {len(export.xml) / 1024:.0f} KiB, "
            f"{export.subjects} subjects, {export.study_events} study events, "
            f"{export.item_data} items, {export.audit_records} audit records"
        )
        valid = "skipped"
        try:
            import xmlschema

            watch = Stopwatch()
            errors = list(xmlschema.XMLSchema(str(XSD)).iter_errors(export.xml.decode()))
            valid = "1" if not errors else "0"
            log(f"XSD validation: {len(errors)} errors in {watch.seconds():.1f} s")
        except ImportError:
            log("XSD validation skipped (xmlschema is a dev dependency)")
    log(
        f"RESULT mllp_p50_ms={median(latencies):.1f} mllp_p99_ms={percentile(latencies, 99):.1f} "
        f"mllp_msgs_per_s={rate:.1f} acks_aa={codes_seen.get('AA', 0)}/{len(latencies)} "
        f"duplicates={duplicates} odm_export_s={export_s:.2f} odm_kb={len(export.xml) / 1024:.0f} "
        f"odm_subjects={export.subjects} odm_items={export.item_data} odm_valid={valid}"
    )
    return 0 if duplicates == 0 and valid != "0" else 1


if __name__ == "__main__":
    sys.exit(main())
