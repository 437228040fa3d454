"""A lab's burst: 200 positive results, each posted 3 times concurrently, through a real threaded
HTTP server on a fresh database. Exactly 200 alerts; every alert's code reaches every tier-1
nurse exactly once (alone or in a bundle SMS), and the first SMS is not held back."""

from __future__ import annotations

import os
import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlmodel import select
from werkzeug.serving import make_server

from config import settings
from notifications.models import MessageCategory, OutboxMessage
from notifications.providers import RecordingProvider
from server import migrate
from server.alerts.models import Alert
from server.app import create_app
from server.auth import service as auth_service
from server.auth.models import Role, SiteMembership
from server.db import get_db, make_engine, normalise_url
from server.messaging import build_dispatcher
from server.participants import service as participants
from server.participants.models import Locale, ParticipantStatus
from server.protocols.models import Study
from server.results import service as results
from server.results.models import ResultKind

N = 200
NURSES = ("+33610000011", "+33610000012")


@pytest.fixture
def fresh_app(tmp_path) -> Iterator:
    """An app on its own freshly migrated database (real commits; dropped afterwards)."""
    server = os.environ.get("STEPDOWN_TEST_DATABASE_URL")
    name = None
    if server:
        import sqlalchemy as sa

        name = f"stepdown_burst_{uuid.uuid4().hex[:8]}"
        admin = make_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        url = sa.engine.make_url(normalise_url(server)).set(database=name)
        url_s = url.render_as_string(hide_password=False)
    else:
        url_s = f"sqlite:///{tmp_path / 'burst.db'}"
    migrate.upgrade(url_s)
    config = settings.TestingConfig()
    config.DATABASE_URL = url_s
    app = create_app(config)
    yield app
    get_db(app).engine.dispose()
    if server and name:
        admin = make_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _seed(app) -> str:
    now = datetime.now(UTC)
    with app.app_context(), get_db(app).job_session() as s:
        site = auth_service.create_site(
            session=s,
            actor=None,
            code="BURST",
            name="Burst",
            country="FR",
            timezone="Europe/Paris",
            now=now,
            failsafe_role="investigator",
        )
        s.add(Study(key="HEROES", title="HEROES", protocol_key="heroes", created_at=now))
        s.flush()
        for i, phone in enumerate(NURSES):
            nurse = auth_service.create_user(
                session=s,
                actor=None,
                email=f"nurse{i}@burst.test",
                full_name=f"Nurse {i}",
                password="x" * 12,
                role=Role.NURSE,
                site_ids=[site.id],
                phone_e164=phone,  # type: ignore[list-item]
                is_phone_verified=True,
                now=now,
            )
            m = s.exec(select(SiteMembership).where(SiteMembership.user_id == nurse.id)).one()
            m.is_on_call = True
            s.add(m)
        lab = auth_service.create_user(
            session=s,
            actor=None,
            email="lab@burst.test",
            full_name="Lab",
            password="x" * 12,
            role=Role.COORDINATOR,
            site_ids=[site.id],
            now=now,
        )  # type: ignore[list-item]
        token, _ = auth_service.issue_token(session=s, user=lab, ttl_hours=1, now=now)
        anchor = now.date() - timedelta(days=30)
        for i in range(N):
            p = participants.enroll(
                session=s,
                user=lab,
                study="HEROES",
                site_id=site.id,
                study_code=f"B{i:03d}",  # type: ignore[arg-type]
                timezone=None,
                cohort="stop",
                anchor_date=anchor,
                status=ParticipantStatus.OFF_TREATMENT_MONITORING,
                locale=Locale.FR,
                # Past screening: the entry gate's baseline attested (issue 17).
                eligibility={"baseline_ctdna": {"value": "negative", "observed_on": anchor}},
                now=now,
            )
            results.ingest(
                session=s,
                kind=ResultKind.CTDNA,
                source="natera",
                accession_id=f"NEG-{i}",
                study_code=p.study_code,
                study_key="HEROES",
                now=now,
                actor="test",
                fields={"collected_at": now - timedelta(days=40), "call": "negative"},
            )
    return token


def test_200_positives_posted_3_times_concurrently(fresh_app):
    token = _seed(fresh_app)
    server = make_server("127.0.0.1", 0, fresh_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    collected = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    posts = [i for i in range(N) for _ in range(3)]
    random.Random(7).shuffle(posts)

    def post(i: int) -> int:
        r = requests.post(
            f"{base}/api/v1/results/ctdna",
            json={
                "lab": "natera",
                "study": "HEROES",
                "study_code": f"B{i:03d}",
                "accession_id": f"POS-{i}",
                "collected_at": collected,
                "call": "positive",
                "mtm_per_ml": 0.3,
            },
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        return r.status_code

    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            codes = list(pool.map(post, posts))
    finally:
        server.shutdown()
        thread.join(timeout=5)
    # Each result: one 201, then 200 for the repeats, even when they raced on the unique key.
    assert Counter(codes) == Counter({201: N, 200: 2 * N})
    with fresh_app.app_context(), get_db(fresh_app).job_session() as s:
        alerts = s.exec(select(Alert)).all()
        assert len(alerts) == N
        assert len({a.trigger_key for a in alerts}) == N
        codes_by_alert = {a.ack_code for a in alerts}
        assert len(codes_by_alert) == N
        rows = s.exec(
            select(OutboxMessage).where(OutboxMessage.category == MessageCategory.STAFF_ALERT)
        ).all()
        assert len(rows) == N * len(NURSES)  # one intended message per alert per nurse
    provider = RecordingProvider()
    with fresh_app.app_context():
        dispatcher = build_dispatcher(
            fresh_app, provider=provider, rate_per_second=0, batch_size=50
        )
        dispatcher.run_once()
    received: Counter[tuple[str, str]] = Counter()
    for send in provider.sent:
        for ack in re.findall(r"ACK (\d{6})", send.body):
            received[(ack, send.to)] += 1
    assert set(received) == {(c, n) for c in codes_by_alert for n in NURSES}
    assert max(received.values()) == 1  # no code twice to the same nurse
    # Bursts were bundled: far fewer SMS than alert messages.
    assert len(provider.sent) < N * len(NURSES) / 3
    # The very first SMS went out as soon as it was due, on its own or leading its bundle.
    assert provider.sent[0].body.count("ACK") >= 1
