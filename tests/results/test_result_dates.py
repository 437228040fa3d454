"""Issue 11, item 5: impossible result dates are refused on every way in, at the boundary.

One function (server.results.service.check_dates) refuses, before anything is written, a sample or
report later than now plus the clock-skew allowance (RESULT_CLOCK_SKEW_SECONDS, 10 minutes), a
scan on a day that has not begun, a report before its sample or its scan's day, and, for a known
participant, a sample or scan from before their enrolment day minus the protocol's look-back
(HEROES: 28 days). Each check is tested on each path (JSON ctDNA, tumour markers and imaging,
FHIR Observation, CSV import): exactly at the limit passes, one second (or day) past is 422
naming the field in that path's own terms, and a 422 leaves no row, no audit, no alert, no SMS.

Everything runs on its own calendar (NOW below), whatever tests.clock.NOW is."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlmodel import select

from notifications.models import OutboxMessage
from server.alerts.models import Alert
from server.audit import AuditEvent
from server.participants.models import Participant
from server.protocols.definition import ProtocolError, load_protocol
from server.results.models import LabResult, ResultStatus
from server.results.service import enrolment_day
from tests import factories
from tests.protocols.test_definition import MINIMAL

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2027, 6, 1, 10, 0, tzinfo=UTC)
SKEW = timedelta(minutes=10)
SECOND = timedelta(seconds=1)
ANCHOR = date(2027, 5, 1)  # before NOW: entered into Stepdown a month after its anchor
EARLIEST = ANCHOR - timedelta(days=28)  # HEROES result_look_back
PATHS = ["ctdna", "tumor_markers", "fhir", "csv"]
FHIR_NAMES = {"collected_at": "effectiveDateTime", "reported_at": "issued"}
_accessions = iter(range(1, 100_000))


@pytest.fixture(autouse=True)
def calendar():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def p1(db, world) -> Participant:
    """A HEROES participant at site A, enrolled at NOW with an anchor a month earlier."""
    with time_machine.travel(NOW, tick=False):
        participant = factories.make_participant(
            db,
            world.staff[("coordinator", "A")],
            world.sites["A"],
            world.study,
            "A-950",
            anchor_date=ANCHOR,
        )
        db.commit()
    return participant


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _submit(
    path: str,
    *,
    api: Any,
    app: Any,
    tmp_path: Path,
    code: str = "A-950",
    collected_at: datetime,
    reported_at: datetime | None = None,
) -> tuple[int, dict[str, list[str]], dict[str, Any]]:
    """Post one result on a path: (status, error fields, body). The CSV import answers 201 when it
    imported, 422 with the fields its row errors name."""
    accession = f"DATES-{next(_accessions)}"
    if path == "ctdna":
        body = {
            "lab": "natera",
            "study": "HEROES",
            "study_code": code,
            "accession_id": accession,
            "collected_at": _iso(collected_at),
            "call": "negative",
            "mtm_per_ml": 0.0,
        }
        if reported_at is not None:
            body["reported_at"] = _iso(reported_at)
        r = api.post("/api/v1/results/ctdna", json=body)
    elif path == "tumor_markers":
        body = {
            "lab": "chemistry",
            "study": "HEROES",
            "study_code": code,
            "accession_id": accession,
            "collected_at": _iso(collected_at),
            "marker": "CA15-3",
            "value": 21.5,
            "unit": "U/mL",
        }
        if reported_at is not None:
            body["reported_at"] = _iso(reported_at)
        r = api.post("/api/v1/results/tumor-markers", json=body)
    elif path == "fhir":
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "identifier": [{"system": "urn:natera:accession", "value": accession}],
            "code": {"text": "Signatera ctDNA"},
            "subject": {"identifier": {"system": "urn:stepdown:study:HEROES", "value": code}},
            "effectiveDateTime": _iso(collected_at),
            "interpretation": [{"coding": [{"code": "NEG", "display": "negative"}]}],
        }
        if reported_at is not None:
            obs["issued"] = _iso(reported_at)
        r = api.post("/api/v1/results/fhir/Observation", json=obs)
    else:
        csv = tmp_path / f"{accession}.csv"
        header = "study,study_code,accession_id,collected_at,call,mtm_per_ml,reported_at\n"
        reported = _iso(reported_at) if reported_at is not None else ""
        csv.write_text(
            header + f"HEROES,{code},{accession},{_iso(collected_at)},negative,0,{reported}\n"
        )
        out = app.test_cli_runner().invoke(args=["results", "import", str(csv), "--lab", "natera"])
        if out.exit_code == 0:
            return 201, {}, {"output": out.output}
        rows = [line for line in out.output.splitlines() if line.startswith("row ")]
        assert [line.split(":")[0] for line in rows] == ["row 2"], out.output
        fields: dict[str, list[str]] = {}
        for part in rows[0].split(": ", 1)[1].split("; "):
            name, _, message = part.partition(": ")
            fields.setdefault(name, []).append(message)
        return 422, fields, {"output": out.output}
    body = r.get_json()
    fields = body["error"]["fields"] if r.status_code >= 400 else {}
    return r.status_code, fields, body


def _name(path: str, field: str) -> str:
    return FHIR_NAMES.get(field, field) if path == "fhir" else field


def _written(db) -> tuple[int, int, int, int]:
    """Results, their audit rows, alerts and SMS: none may appear on a 422."""
    db.expire_all()
    return (
        len(db.exec(select(LabResult)).all()),
        len(db.exec(select(AuditEvent).where(AuditEvent.entity == "lab_result")).all()),
        len(db.exec(select(Alert)).all()),
        len(db.exec(select(OutboxMessage)).all()),
    )


def _refused(db, before, status, fields, path, field) -> None:
    assert status == 422, fields
    assert list(fields) == [_name(path, field)], fields
    assert _written(db) == before


@pytest.mark.parametrize("path", PATHS)
def test_a_sample_taken_in_the_future(path, db, app, api_as, p1, tmp_path):
    api = api_as("coordinator", "A")
    status, fields, _ = _submit(path, api=api, app=app, tmp_path=tmp_path, collected_at=NOW + SKEW)
    assert status == 201, fields  # exactly the allowance: a lab clock 10 minutes fast
    before = _written(db)
    status, fields, _ = _submit(
        path, api=api, app=app, tmp_path=tmp_path, collected_at=NOW + SKEW + SECOND
    )
    _refused(db, before, status, fields, path, "collected_at")
    assert "future" in fields[_name(path, "collected_at")][0]


@pytest.mark.parametrize("path", PATHS)
def test_a_report_from_the_future(path, db, app, api_as, p1, tmp_path):
    api = api_as("coordinator", "A")
    sample = NOW - timedelta(days=3)
    ok, fields, _ = _submit(
        path, api=api, app=app, tmp_path=tmp_path, collected_at=sample, reported_at=NOW + SKEW
    )
    assert ok == 201, fields
    before = _written(db)
    status, fields, _ = _submit(
        path,
        api=api,
        app=app,
        tmp_path=tmp_path,
        collected_at=sample,
        reported_at=NOW + SKEW + SECOND,
    )
    _refused(db, before, status, fields, path, "reported_at")


@pytest.mark.parametrize("path", PATHS)
def test_a_report_before_its_sample(path, db, app, api_as, p1, tmp_path):
    api = api_as("coordinator", "A")
    sample = NOW - timedelta(days=8)
    ok, fields, _ = _submit(
        path, api=api, app=app, tmp_path=tmp_path, collected_at=sample, reported_at=sample
    )
    assert ok == 201, fields
    before = _written(db)
    status, fields, _ = _submit(
        path, api=api, app=app, tmp_path=tmp_path, collected_at=sample, reported_at=sample - SECOND
    )
    _refused(db, before, status, fields, path, "reported_at")
    if path == "fhir":
        assert "effectiveDateTime" in fields["issued"][0]


@pytest.mark.parametrize("path", PATHS)
def test_a_sample_from_before_enrolment_minus_the_look_back(path, db, app, api_as, p1, tmp_path):
    assert enrolment_day(p1) == ANCHOR  # entered after its anchor: the anchor counts
    api = api_as("coordinator", "A")
    first_moment = datetime(EARLIEST.year, EARLIEST.month, EARLIEST.day, tzinfo=PARIS)
    ok, fields, _ = _submit(path, api=api, app=app, tmp_path=tmp_path, collected_at=first_moment)
    assert ok == 201, fields
    before = _written(db)
    status, fields, _ = _submit(
        path, api=api, app=app, tmp_path=tmp_path, collected_at=first_moment - SECOND
    )
    _refused(db, before, status, fields, path, "collected_at")
    message = fields[_name(path, "collected_at")][0]
    assert EARLIEST.isoformat() in message and "28 days" in message and "HEROES" in message


@pytest.mark.parametrize("path", PATHS)
def test_an_unknown_participant_is_quarantined_whatever_its_date_but_not_from_the_future(
    path, db, app, api_as, p1, tmp_path
):
    """The look-back needs the participant's enrolment: an unknown participant's result is
    quarantined as before (a person reviews it), even from 1900; a date in the future needs no
    participant and is 422 for everyone."""
    api = api_as("coordinator", "A")
    old = datetime(1900, 1, 1, 9, 0, tzinfo=UTC)
    ok, fields, _ = _submit(
        path, api=api, app=app, tmp_path=tmp_path, code="NOBODY", collected_at=old
    )
    assert ok == 201, fields
    held = db.exec(select(LabResult).where(LabResult.study_code == "NOBODY")).one()
    assert held.status == ResultStatus.QUARANTINED
    # The same date for the known participant is refused.
    status, fields, _ = _submit(path, api=api, app=app, tmp_path=tmp_path, collected_at=old)
    assert status == 422 and list(fields) == [_name(path, "collected_at")]
    before = _written(db)
    status, fields, _ = _submit(
        path,
        api=api,
        app=app,
        tmp_path=tmp_path,
        code="NOBODY",
        collected_at=NOW + SKEW + SECOND,
    )
    _refused(db, before, status, fields, path, "collected_at")


def test_enrolment_is_the_day_entered_when_that_comes_before_the_anchor(db, world, api_as):
    """Baseline draws are planned before the anchor: for a participant entered before it, the
    look-back counts from the day they were entered."""
    with time_machine.travel(datetime(2027, 4, 20, 8, 0, tzinfo=UTC), tick=False):
        early = factories.make_participant(
            db,
            world.staff[("coordinator", "A")],
            world.sites["A"],
            world.study,
            "A-951",
            anchor_date=date(2027, 5, 11),
        )
        db.commit()
    assert enrolment_day(early) == date(2027, 4, 20)
    api = api_as("coordinator", "A")
    first = datetime(2027, 3, 23, tzinfo=PARIS)  # 28 days before 2027-04-20
    body = {
        "study": "HEROES",
        "study_code": "A-951",
        "call": "negative",
        "collected_at": _iso(first),
        "accession_id": "EARLY-1",
    }
    assert api.post("/api/v1/results/ctdna", json=body).status_code == 201
    late = {**body, "collected_at": _iso(first - SECOND), "accession_id": "EARLY-2"}
    r = api.post("/api/v1/results/ctdna", json=late)
    assert r.status_code == 422 and "collected_at" in r.get_json()["error"]["fields"]


def _imaging(api, *, performed_on: date, reported_at: datetime | None = None, code="A-950"):
    body = {
        "lab": "radiology",
        "study": "HEROES",
        "study_code": code,
        "accession_id": f"IMG-{next(_accessions)}",
        "modality": "ct",
        "performed_on": performed_on.isoformat(),
        "recist": "SD",
    }
    if reported_at is not None:
        body["reported_at"] = _iso(reported_at)
    r = api.post("/api/v1/results/imaging", json=body)
    return r.status_code, (r.get_json().get("error") or {}).get("fields", {})


def test_a_scan_on_a_day_that_has_not_begun(db, api_as, p1, calendar):
    """performed_on is a date: in the future once it has not begun in the participant's zone,
    allowing the clock skew. June 2 begins in Paris at 2027-06-01T22:00Z."""
    api = api_as("coordinator", "A")
    june_2 = date(2027, 6, 2)
    starts = datetime(2027, 6, 2, tzinfo=PARIS)
    calendar.move_to(starts - SKEW)
    assert _imaging(api, performed_on=june_2)[0] == 201
    before = _written(db)
    calendar.move_to(starts - SKEW - SECOND)
    status, fields = _imaging(api, performed_on=june_2)
    _refused(db, before, status, fields, "imaging", "performed_on")
    # An unknown participant's scan: the first zone on Earth to begin a day (UTC+14) decides.
    status, fields = _imaging(api, performed_on=date(2027, 6, 3), code="NOBODY")
    assert status == 422 and list(fields) == ["performed_on"]


def test_a_scan_report_before_its_day_and_a_scan_before_the_look_back(db, api_as, p1):
    api = api_as("coordinator", "A")
    day = date(2027, 5, 20)
    starts = datetime(2027, 5, 20, tzinfo=PARIS)
    assert _imaging(api, performed_on=day, reported_at=starts)[0] == 201
    before = _written(db)
    status, fields = _imaging(api, performed_on=day, reported_at=starts - SECOND)
    _refused(db, before, status, fields, "imaging", "reported_at")
    assert _imaging(api, performed_on=EARLIEST)[0] == 201
    before = _written(db)
    status, fields = _imaging(api, performed_on=EARLIEST - timedelta(days=1))
    _refused(db, before, status, fields, "imaging", "performed_on")


def test_the_allowance_is_a_setting(app, db, api_as, p1):
    api = api_as("coordinator", "A")
    body = {"study": "HEROES", "study_code": "A-950", "call": "negative"}
    saved = app.config["RESULT_CLOCK_SKEW_SECONDS"]
    assert saved == 600
    app.config["RESULT_CLOCK_SKEW_SECONDS"] = 60
    try:
        ahead = {**body, "collected_at": _iso(NOW + timedelta(seconds=61)), "accession_id": "S-1"}
        assert api.post("/api/v1/results/ctdna", json=ahead).status_code == 422
        ahead = {**body, "collected_at": _iso(NOW + timedelta(seconds=60)), "accession_id": "S-2"}
        assert api.post("/api/v1/results/ctdna", json=ahead).status_code == 201
    finally:
        app.config["RESULT_CLOCK_SKEW_SECONDS"] = saved


def test_the_issues_three_examples_are_refused(db, api_as, p1):
    """As reported: collected 30 days ahead, reported 8 days before collection, collected in
    1900; each 422 naming its field, nothing kept."""
    api = api_as("coordinator", "A")
    before = _written(db)
    base = {"study": "HEROES", "study_code": "A-950", "call": "positive", "mtm_per_ml": 0.3}
    cases = [
        ({"collected_at": _iso(NOW + timedelta(days=30))}, "collected_at"),
        (
            {
                "collected_at": _iso(NOW - timedelta(days=1)),
                "reported_at": _iso(NOW - timedelta(days=9)),
            },
            "reported_at",
        ),
        ({"collected_at": "1900-01-01T00:00:00+00:00"}, "collected_at"),
    ]
    for n, (dates, field) in enumerate(cases):
        r = api.post("/api/v1/results/ctdna", json={**base, **dates, "accession_id": f"X-{n}"})
        assert r.status_code == 422, r.get_json()
        assert list(r.get_json()["error"]["fields"]) == [field]
    assert _written(db) == before


# --- the protocol files ------------------------------------------------------------------------


def test_each_trial_states_its_look_back(db):
    from config.settings import PROTOCOLS_DIR
    from server.protocols.definition import load_all

    protocols = load_all(PROTOCOLS_DIR)
    assert {k: str(p.result_look_back) for k, p in protocols.items()} == {
        "free-her": "28 days",
        "heroes": "28 days",
        "nct07239271": "28 days",
        "stop-her2": "30 days",  # seed 003: "scans 30 days prior to starting study"
    }
    # Stated by the seed for STOP-HER2; a documented default elsewhere.
    for key in ("free-her", "heroes", "nct07239271"):
        assert "result_look_back" in protocols[key].site_defaults, key
    assert "result_look_back" not in protocols["stop-her2"].site_defaults


def test_a_look_back_shorter_than_a_planned_window_is_refused(tmp_path: Path):
    baseline = MINIMAL.replace(
        "schedule:\n",
        "result_look_back: 20 days\nschedule:\n"
        "  - id: baseline\n    type: ctdna_draw\n    label: Baseline draw\n"
        "    first: -21 days\n    window: {early_days: 7, late_days: 7}\n",
    )
    path = tmp_path / "short.yaml"
    path.write_text(baseline)
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    assert "result_look_back" in str(info.value) and "28 days" in str(info.value)
    path.write_text(baseline.replace("20 days", "28 days"))
    assert str(load_protocol(path).result_look_back) == "28 days"
    path.write_text(MINIMAL.replace("schedule:\n", "result_look_back: -1 days\nschedule:\n"))
    with pytest.raises(ProtocolError, match="must not be negative"):
        load_protocol(path)
