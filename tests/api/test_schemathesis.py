"""Schemathesis over every operation of the OpenAPI document (issue 11, item 4).

Each operation runs twice: with a staff bearer token (the admin of site A, who may call every
operation) and with a participant's app token (which reaches only /mobile/*; everything else must
answer 404 or 401, never 500). Each run is one pytest test inside the usual rolled-back
transaction, so it works on SQLite and PostgreSQL alike and leaves nothing behind.

Generation is fixed: schemathesis' seed (SEED), Hypothesis derandomized, no example database. Each
operation gets schemathesis' examples and coverage phases (boundary values, every required field
missing, wrong types, unexpected methods) and then EXAMPLES fuzzed cases (positive and negative);
a participant's token on a staff operation gets 5 fuzzed cases only (every answer there is 404).
Dates are drawn from the whole calendar, its ends often. Valid-looking path ids and body fields
are half the time swapped for real ones of the test world (participants, sites, users, the alert
and messages of a positive ctDNA result), so the cases reach the services instead of stopping at
"not found".

Checks: no 5xx; every status documented; every content type documented; every JSON answer valid
against its documented schema; invalid input rejected with a 4xx; undeclared methods answer 405
with `Allow`; authentication not ignored. Not `positive_data_acceptance`: a schema-valid time zone,
phone number or regimen can still be wrong, and that is a 422 naming the field.

Cost, measured on the 2-core development machine with 58 operations and EXAMPLES = 50: 116 runs,
5,964 requests (the coverage phase is about half of them): 42 s on SQLite, 57 s on PostgreSQL
(25 examples: 4,714 requests, 32 s and 46 s). The summary line printed at the end of the run gives
the exact counts. STEPDOWN_FUZZ_EXAMPLES changes the fuzzed cases per run (e.g. 1000 for a
nightly run); STEPDOWN_FUZZ_REPORT=1 prints a line per operation and credential.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

from config import settings
from server.app import create_app
from server.participants import mobile
from tests import clock, factories

SEED = 20261201
# Fuzzed cases per operation and credential (schemathesis' CI default is 100; see the cost above).
EXAMPLES = int(os.environ.get("STEPDOWN_FUZZ_EXAMPLES", "50"))
# A participant's token on a staff operation: every answer is 404, a few cases suffice.
STAFF_OPERATION_EXAMPLES = 5

# The checks this suite answers for (see the module docstring for the one left out).
CHECKS = {
    "not_a_server_error": True,
    "status_code_conformance": True,
    "content_type_conformance": True,
    "response_schema_conformance": True,
    "response_headers_conformance": True,
    "negative_data_rejection": True,
    "missing_required_header": True,
    "unsupported_method": True,
    "allow_header_conformance": True,
    "ignored_auth": True,
    "positive_data_acceptance": False,
}


@schemathesis.serializer("x-application/hl7-v2+er7")
def _hl7_v2(ctx: Any, value: Any) -> bytes:
    """An HL7 v2 message (POST /api/v1/results/hl7v2) goes on the wire as the text it is."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


class _CurrentApp:
    """A WSGI app that forwards to the test run's app (bound to the test database at runtime)."""

    app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


APP = _CurrentApp()


def _spec() -> dict[str, Any]:
    # The document is what the app serves; building it needs no database.
    config = settings.TestingConfig()
    config.DATABASE_URL = "sqlite://"
    return create_app(config).extensions["stepdown_api"].spec.to_dict()  # type: ignore[no-any-return]


SPEC = _spec()

# Dates and instants from the whole calendar, its ends often (year 1, 9999, offsets of ±14 h), and
# around now: schemathesis' default draws only recent ones, and far dates overflowed window and
# UTC arithmetic.
_DAYS = st.one_of(
    st.sampled_from([date.min, date.max]),
    st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)),
    st.dates(),
)
_OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=14))])
schemathesis.openapi.format("date", _DAYS.map(date.isoformat))
schemathesis.openapi.format(
    "date-time",
    st.builds(
        lambda day, hour, offset: datetime.combine(day, time(hour), offset).isoformat(),
        _DAYS,
        st.integers(0, 23),
        _OFFSETS,
    ),
)


def _schema(operations: list[dict[str, Any]] | None = None) -> Any:
    loaded = schemathesis.openapi.from_dict(
        SPEC,
        config=schemathesis.Config.from_dict(
            {
                "seed": SEED,
                "cache": {"enabled": False},
                "generation": {
                    "mode": "all",
                    "max-examples": EXAMPLES,
                    "deterministic": True,
                    "database": "none",
                    # The bearer token is the test's (sent with every call); missing and wrong
                    # tokens are the ignored_auth check's job.
                    "with-security-parameters": False,
                },
                "phases": {"stateful": {"enabled": False}},
                "checks": {name: {"enabled": on} for name, on in CHECKS.items()},
                "operations": operations or [],
            }
        ),
    )
    loaded.app = APP
    return loaded


staff_schema = _schema()
# A participant's token gets 404 from every staff operation before its input is read: a few
# fuzzed cases there prove it; the app's own operations (and sign-in) get the whole treatment.
participant_schema = _schema(
    [
        {
            "include-path-regex": "^/api/v1/(?!mobile/|auth/token$)",
            "phases": {"coverage": {"enabled": False}, "examples": {"enabled": False}},
            "generation": {"max-examples": STAFF_OPERATION_EXAMPLES},
        }
    ]
)

# (credential, "METHOD /path") -> counters; printed once the module is done.
STATS: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(
    collections.Counter
)


def summary() -> str | None:
    """One line: operations, runs, requests, statuses seen."""
    if not STATS:
        return None
    requests = sum(c["requests"] for c in STATS.values())
    statuses: collections.Counter[str] = collections.Counter()
    for c in STATS.values():
        statuses.update({k[7:]: v for k, v in c.items() if k.startswith("status ")})
    operations = len({op for _, op in STATS})
    return (
        f"schemathesis: {operations} operations, {len(STATS)} runs (operation x credential), "
        f"{requests} requests (coverage phase + up to {EXAMPLES} fuzzed per run), seed {SEED}; "
        "statuses " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    )


class _SummaryPlugin:
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        line = summary()
        if line:
            terminalreporter.write_line(line)
        if os.environ.get("STEPDOWN_FUZZ_REPORT"):  # one line per operation and credential
            for (who, operation), counts in sorted(STATS.items()):
                statuses = {k[7:]: v for k, v in sorted(counts.items()) if k != "requests"}
                terminalreporter.write_line(
                    f"  {who:11} {operation:78} {counts['requests']:4} {statuses}"
                )


@pytest.fixture(scope="module", autouse=True)
def _report_summary(request: pytest.FixtureRequest) -> None:
    manager = request.config.pluginmanager
    if not manager.has_plugin("stepdown-schemathesis-summary"):
        manager.register(_SummaryPlugin(), "stepdown-schemathesis-summary")


@pytest.fixture
def fuzz_world(
    daytime: None, app: Any, client: Any, db: Any, world: factories.World, api_as: Any
) -> Any:
    """The world plus a positive ctDNA result (an alert, its messages) and an activation code;
    returns the known ids and values the generated cases may borrow."""
    APP.app = app
    admin = api_as("admin", "A")
    a1 = world.participants["A1"]
    positive = admin.post(
        "/api/v1/results/ctdna",
        json={
            "study": "HEROES",
            "study_code": "A-001",
            "accession_id": "FUZZ-1",
            "collected_at": (clock.utcnow() - timedelta(hours=2)).isoformat(),
            "call": "positive",
        },
    )
    assert positive.status_code == 201, positive.get_json()
    assert admin.post(f"/api/v1/participants/{a1.id}/activation").status_code == 202
    alerts = admin.get("/api/v1/alerts").get_json()
    messages = admin.get(f"/api/v1/participants/{a1.id}/messages").get_json()
    events = admin.get(f"/api/v1/participants/{a1.id}/schedule").get_json()
    decisions = admin.get(f"/api/v1/participants/{a1.id}/decisions").get_json()
    staff = [u.id for u in world.staff.values()]
    sites = [s.id for s in world.sites.values()]
    return {
        "admin": world.staff[("admin", "A")],
        "participant": a1,
        "path": {
            "participant_id": [p.id for p in world.participants.values()],
            "site_id": sites,
            "user_id": staff,
            "alert_id": [a["id"] for a in alerts],
            "event_id": [e["id"] for e in events],
            "message_id": [m["id"] for m in messages],
            "decision_id": [d["id"] for d in decisions],
            "key": ["heroes", "HEROES"],
        },
        "body": {
            "study": ["HEROES"],
            "study_code": ["A-001", "A-002", "B-001"],
            "site_id": sites,
            "site_ids": [sites[:1], sites],
            "user_ids": [staff[:2]],
            "timezone": ["Europe/Paris", "America/New_York"],
            "country": ["FR", "US"],
            "phone": ["+33612345678", "+16175550123"],
            "cohort": ["stop"],
            "email": ["admin.a@example.test"],
            "password": [factories.PASSWORD],
        },
    }


def _participant_token(client: Any, db: Any, participant: Any) -> str:
    """A fresh app token for the participant, through the real activation call."""
    code = "246810"
    db.add(
        mobile.ActivationCode(
            participant_id=participant.id,
            code_hash=mobile._hash(code),
            expires_at=clock.utcnow() + timedelta(minutes=30),
        )
    )
    db.commit()
    resp = client.post("/api/v1/mobile/activate", json={"study_code": "A-001", "code": code})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["token"]  # type: ignore[no-any-return]


def _borrow_known(case: Any, known: dict[str, Any]) -> None:
    """Half the time, swap a valid generated id or field for a real one (positive parts only).

    The coin is seeded by the generated case itself (schemathesis' coverage phase runs only
    without extra Hypothesis strategies), so a given seed always makes the same requests."""
    coin = random.Random(
        hashlib.sha256(repr(case.path_parameters).encode() + repr(case.body).encode()).digest()
    )
    meta = case.meta
    components = meta.components if meta is not None else {}

    def positive(location: ParameterLocation) -> bool:
        info = components.get(location)
        return info is None or info.mode == GenerationMode.POSITIVE

    if case.path_parameters and positive(ParameterLocation.PATH):
        for name, values in known["path"].items():
            if name in case.path_parameters and values and coin.random() < 0.5:
                case.path_parameters[name] = coin.choice(values)
    if isinstance(case.body, dict) and positive(ParameterLocation.BODY):
        for name, values in known["body"].items():
            if name in case.body and coin.random() < 0.5:
                case.body[name] = coin.choice(values)


SETTINGS = hypothesis.settings(
    deadline=None,  # requests hit a real database; time is frozen anyway
    suppress_health_check=list(hypothesis.HealthCheck),
    print_blob=False,
)


def _run(who: str, case: Any, known: dict[str, Any], token: str) -> None:
    _borrow_known(case, known)
    stats = STATS[(who, case.operation.label)]
    response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"})
    stats["requests"] += 1
    stats[f"status {response.status_code}"] += 1


@staff_schema.parametrize()
@SETTINGS
def test_every_operation_as_staff(case: Any, db: Any, fuzz_world: Any) -> None:
    """The admin of site A: no 5xx, nothing undocumented, invalid input refused."""
    if case.operation.label == "DELETE /api/v1/auth/token" or "token" not in fuzz_world:
        fuzz_world["token"] = factories.token_for(db, fuzz_world["admin"])  # it revokes its own
    _run("staff", case, fuzz_world, fuzz_world["token"])


@participant_schema.parametrize()
@SETTINGS
def test_every_operation_as_participant(case: Any, client: Any, db: Any, fuzz_world: Any) -> None:
    """A participant's app token: its own /mobile/* calls work, every other one is 404/401."""
    if case.operation.label == "DELETE /api/v1/mobile/token" or "token" not in fuzz_world:
        fuzz_world["token"] = _participant_token(client, db, fuzz_world["participant"])
    _run("participant", case, fuzz_world, fuzz_world["token"])
