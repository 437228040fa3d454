"""Acknowledgement times (issue 16 item 4): a month of alerts with known timings, and every figure
checked on the page, in the CSV (audited, formula-safe) and in the JSON API; site scoping, the
month of a site's own time zone, what is not counted, bad filters."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from server.alerts import timing
from server.alerts.models import Alert, AlertKind, AlertLog, AlertState, Level
from server.audit import AuditEvent
from server.participants.models import Participant
from server.results.models import CtdnaCall, LabResult, ResultKind
from tests import factories
from tests.pages.test_adherence_pages import row

MONTH = "2026-06"
PAGE = "/reports/ack-times"
API = "/api/v1/reports/acknowledgement"

# Ten critical/urgent alerts at site A in June 2026: minutes from the result's arrival to the
# first SMS, the acknowledgement and the resolution (None: never).
TIMINGS: list[tuple[float, float | None, float | None]] = [
    (1, 5, 65),
    (1, 10, 70),
    (1, 12, 72),
    (1, 20, 80),
    (1, 25, 85),
    (2, 35, 95),
    (2, 45, 105),
    (2, 59, None),
    (2, 90, None),
    (3, None, None),  # never acknowledged; reached the fail-safe
]
EXPECTED = {
    "alerts": 10,
    "acknowledged": 9,
    "resolved": 7,
    # nearest rank: p50 of 10 values is the 5th, p90 the 9th; of 9 values the 5th and the 9th
    "notify": (1.0, 2.0, 3.0),
    "ack": (25.0, 90.0, 90.0),
    "resolve": (80.0, 105.0, 105.0),  # 7 values: the 4th and the 7th
    "within_30_pct": 50.0,  # 5, 10, 12, 20, 25 of 10
    "within_60_pct": 80.0,  # and 35, 45, 59
    "failsafe": 1,
}


def make_alert(
    db: Session,
    participant: Participant,
    n: int,
    *,
    received: datetime,
    notify: float | None,
    ack: float | None,
    resolve: float | None,
    kind: AlertKind = AlertKind.CTDNA_POSITIVE,
    level: Level = Level.CRITICAL,
    with_result: bool = True,
    failsafe: bool = False,
) -> Alert:
    result_id = None
    if with_result:
        result = LabResult(
            kind=ResultKind.CTDNA,
            source="lab",
            accession_id=f"ACC-{n}",
            study_code=participant.study_code,
            participant_id=participant.id,
            site_id=participant.site_id,
            call=CtdnaCall.POSITIVE,
            payload_sha256="0" * 64,
            received_at=received,
        )
        db.add(result)
        db.flush()
        result_id = result.id
    # The alert opens a few seconds after the result arrived (the figures count from arrival).
    opened = received + timedelta(seconds=12) if with_result else received

    def at(minutes: float | None) -> datetime | None:
        return None if minutes is None else received + timedelta(minutes=minutes)

    alert = Alert(
        trigger_key=f"t-{n}",
        kind=kind,
        level=level,
        state=AlertState.RESOLVED
        if resolve is not None
        else AlertState.ACKNOWLEDGED
        if ack is not None
        else AlertState.OPEN,
        participant_id=participant.id,
        site_id=participant.site_id,
        result_id=result_id,
        ack_code=f"{100000 + n}",
        summary="test",
        opened_at=opened,
        acknowledged_at=at(ack),
        resolved_at=at(resolve),
    )
    db.add(alert)
    db.flush()
    if notify is not None:
        for tier, extra in ((1, 0.0), (2, 15.0)):  # only the first notification counts
            db.add(
                AlertLog(alert_id=alert.id, at=at(notify + extra), what="tier_notified", tier=tier)
            )
    if failsafe:
        db.add(AlertLog(alert_id=alert.id, at=at(120), what="failsafe_fired"))
    return alert


@pytest.fixture
def month_of_alerts(db: Session, world: factories.World) -> factories.World:
    w = world
    start = datetime(2026, 6, 2, 8, 0, tzinfo=UTC)
    for i, (notify, ack, resolve) in enumerate(TIMINGS):
        last = i == len(TIMINGS) - 1
        make_alert(
            db,
            w.participants["A1"],
            i,
            received=start + timedelta(days=2 * i, minutes=7),
            notify=notify,
            ack=ack,
            resolve=resolve,
            # the last one is an urgent answer with no result: it counts from its opening
            kind=AlertKind.CRITICAL_ANSWER if last else AlertKind.CTDNA_POSITIVE,
            level=Level.URGENT if last else Level.CRITICAL,
            with_result=not last,
            failsafe=last,
        )
    # Not counted in June at site A:
    # - 30 June 23:30 UTC is 1 July 01:30 in Paris: July's;
    make_alert(db, w.participants["A1"], 50, received=datetime(2026, 6, 30, 23, 30, tzinfo=UTC),
           notify=1, ack=3, resolve=None)  # fmt: skip
    # - a routine task asks for no acknowledgement; a dead route is the system's own alert;
    make_alert(db, w.participants["A1"], 51, received=start, notify=600, ack=None, resolve=None,
           kind=AlertKind.REDRAW_NEEDED, level=Level.ROUTINE)  # fmt: skip
    make_alert(db, w.participants["A1"], 52, received=start, notify=1, ack=None, resolve=None,
           kind=AlertKind.DEAD_ROUTE, level=Level.URGENT, with_result=False)  # fmt: skip
    # - site B's alert is site B's.
    make_alert(db, w.participants["B1"], 53, received=start, notify=1, ack=40, resolve=None)
    db.commit()
    return w


def _check_json(figures: dict[str, Any]) -> None:
    assert figures["alerts"] == EXPECTED["alerts"]
    assert figures["acknowledged"] == EXPECTED["acknowledged"]
    assert figures["resolved"] == EXPECTED["resolved"]
    for key, name in (
        ("notify", "minutes_to_first_notification"),
        ("ack", "minutes_to_acknowledgement"),
        ("resolve", "minutes_to_resolution"),
    ):
        spread = figures[name]
        assert (spread["p50"], spread["p90"], spread["max"]) == EXPECTED[key], name
    assert figures["acknowledged_within_30_min_pct"] == EXPECTED["within_30_pct"]
    assert figures["acknowledged_within_60_min_pct"] == EXPECTED["within_60_pct"]
    assert figures["reached_failsafe"] == EXPECTED["failsafe"]


def test_the_figures_of_a_month_with_known_timings() -> None:
    """The pure computation: nearest-rank percentiles, shares of all alerts, the fail-safe."""
    received = datetime(2026, 6, 2, 8, 0, tzinfo=UTC)
    rows = [
        timing.AlertTimes(
            alert_id=i,
            site_id=1,
            kind="ctdna_positive",
            level="critical",
            study_code=None,
            received_at=received,
            opened_at=received,
            first_notified_at=received + timedelta(minutes=n),
            acknowledged_at=None if a is None else received + timedelta(minutes=a),
            resolved_at=None if r is None else received + timedelta(minutes=r),
            failsafe_at=received + timedelta(hours=2) if a is None else None,
        )
        for i, (n, a, r) in enumerate(TIMINGS)
    ]
    _check_json(timing.figures(rows).as_dict())  # type: ignore[arg-type]
    assert timing.percentile([], 50) is None
    assert timing.percentile([7.0], 90) == 7.0


def test_api_gives_every_figure_per_site_and_month(month_of_alerts: Any, api_as: Any) -> None:
    body = api_as("monitor", "A").get(f"{API}?from={MONTH}&to=2026-07").get_json()
    assert body["months"] == ["2026-06", "2026-07"]
    june = [r for r in body["by_site_month"] if r["month"] == MONTH]
    assert [r["site_code"] for r in june] == ["SITE-A"]  # site B's alert is not mine
    _check_json(june[0])
    july = [r for r in body["by_site_month"] if r["month"] == "2026-07"]
    assert july[0]["alerts"] == 1 and july[0]["minutes_to_acknowledgement"]["p50"] == 3.0
    # Each alert's moments: the urgent answer without a result counts from its opening.
    last = next(a for a in body["alerts"] if a["kind"] == "critical_answer")
    assert last["acknowledged_at"] is None and last["failsafe_at"] is not None
    assert last["minutes_to_first_notification"] == 3.0
    assert {a["kind"] for a in body["alerts"]} == {"ctdna_positive", "critical_answer"}
    # Site B sees only its own alert.
    theirs = api_as("investigator", "B").get(f"{API}?from={MONTH}&to={MONTH}").get_json()
    assert [(r["site_code"], r["alerts"]) for r in theirs["by_site_month"]] == [("SITE-B", 1)]
    assert theirs["total"]["acknowledged_within_60_min_pct"] == 100.0


def test_api_refuses_bad_filters_and_other_sites(month_of_alerts: Any, api_as: Any) -> None:
    api = api_as("monitor", "A")
    for query in ("from=2026-13", "to=June", "from=2026-07&to=2026-06", "from=2020-01&to=2026-06"):
        resp = api.get(f"{API}?{query}")
        assert resp.status_code in (400, 422), (query, resp.status_code)
        assert resp.get_json()["error"], query
    other = month_of_alerts.sites["B"].id
    assert api.get(f"{API}?site_id={other}").status_code == 404
    spec = api.get("/api/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/reports/acknowledgement"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"site_id", "from", "to"}


def test_page_shows_the_figures_and_a_chart(month_of_alerts: Any, web_as: Any) -> None:
    html = web_as("investigator", "A").text(f"{PAGE}?from={MONTH}&to=2026-07")
    cells = row(html, view="by-month", month=MONTH)["cells"]
    text = {k: v["text"].strip() for k, v in cells.items()}
    assert text["alerts"] == "10" and text["acknowledged"] == "9"
    assert (text["notify_p50"], text["ack_p50"], text["ack_p90"], text["ack_max"]) == (
        "1",
        "25",
        "90",
        "90",
    )
    assert text["resolve_p50"] == "80"
    assert (text["ack_30"], text["ack_60"], text["failsafe"]) == ("50.0 %", "80.0 %", "1")
    by_site = row(html, site="SITE-A", month=MONTH)["cells"]
    assert by_site["ack_p90"]["text"].strip() == "90"
    # The chart is inline SVG: a p50 and a p90 bar per month with alerts, the two target lines.
    assert html.count('class="bar p50"') == 2 and html.count('class="bar p90"') == 2
    assert html.count('class="target"') == 2
    assert "SITE-B" not in html


def test_csv_export_is_audited_and_formula_safe(
    month_of_alerts: Any, web_as: Any, db: Session
) -> None:
    web = web_as("monitor", "A")
    resp = web.get(f"{PAGE}.csv?from={MONTH}&to={MONTH}")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    assert len(rows) == 1
    r = rows[0]
    assert (r["site_code"], r["month"], r["alerts"], r["acknowledged"]) == (
        "SITE-A",
        MONTH,
        "10",
        "9",
    )
    assert (r["ack_p50_min"], r["ack_p90_min"], r["ack_max_min"]) == ("25.0", "90.0", "90.0")
    assert (r["ack_within_30_min_pct"], r["ack_within_60_min_pct"]) == ("50.0", "80.0")
    assert r["reached_failsafe"] == "1"
    # Each alert: a participant code that looks like a formula is written as text.
    participant = month_of_alerts.participants["A1"]
    participant.study_code = "=HYPERLINK(1)"
    db.add(participant)
    db.commit()
    per_alert = web.get(f"{PAGE}.csv?view=alerts&from={MONTH}&to={MONTH}")
    lines = list(csv.DictReader(io.StringIO(per_alert.get_data(as_text=True).lstrip("\ufeff"))))
    assert len(lines) == 10
    assert all(not line["study_code"].startswith("=") for line in lines)
    assert sorted(float(x["minutes_to_acknowledgement"] or 999) for x in lines)[0] == 5.0
    exports = db.exec(
        select(AuditEvent)
        .where(AuditEvent.action == "ack_report.export")
        .order_by(col(AuditEvent.id))
    ).all()
    assert [(e.entity_id, (e.after or {})["rows"]) for e in exports] == [
        ("summary", 1),
        ("alerts", 10),
    ]
    assert exports[0].actor_user_id == month_of_alerts.staff[("monitor", "A")].id
    # Bad filters are a 400 page, another site a 404 page; no export is audited for them.
    assert web.get(f"{PAGE}.csv?from=2026-6").status_code == 400
    assert web.get(f"{PAGE}?site={month_of_alerts.sites['B'].id}").status_code == 404
