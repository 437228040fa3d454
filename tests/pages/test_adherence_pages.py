"""Adherence pages: the figures per site × study, event type and month for a hand-built history
under a frozen clock, the participants behind each count, the audited CSV export, site scoping
and bad filters."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from html import unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from sqlmodel import col, select

from server.audit import AuditEvent
from server.schedules.models import ScheduleEvent
from tests import factories

NOW = "2027-04-20T10:00:00"
P = "/api/v1/participants"
FIGURES = ("due", "in_window", "early", "late", "missed", "open")


def at(iso: str = NOW) -> Any:
    """Freeze the clock at an ISO instant (UTC)."""
    return time_machine.travel(datetime.fromisoformat(iso).replace(tzinfo=UTC), tick=False)


class Rows(HTMLParser):
    """The table rows of a page that carry data-* attributes, with their cells by data-measure
    (text and link)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self._row: dict[str, Any] | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr":
            keys = {k[5:]: v for k, v in a.items() if k.startswith("data-")}
            self._row = {"keys": keys, "cells": {}} if keys else None
            if self._row is not None:
                self.rows.append(self._row)
        elif tag in ("td", "th") and self._row is not None and a.get("data-measure"):
            self._cell = a["data-measure"]
            self._row["cells"][self._cell] = {"text": "", "href": None}
        elif tag == "a" and self._row is not None and self._cell is not None:
            cell = self._row["cells"][self._cell]
            cell["href"] = cell["href"] or unescape(a.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._cell is not None:
            self._row["cells"][self._cell]["text"] += data


def rows_of(html: str, **keys: str) -> list[dict[str, Any]]:
    parser = Rows()
    parser.feed(html)
    return [r for r in parser.rows if all(r["keys"].get(k) == v for k, v in keys.items())]


def row(html: str, **keys: str) -> dict[str, Any]:
    found = rows_of(html, **keys)
    assert len(found) == 1, (keys, [r["keys"] for r in rows_of(html)])
    return found[0]


def counts(r: dict[str, Any]) -> dict[str, int]:
    return {m: int(r["cells"][m]["text"].strip()) for m in FIGURES}


def text(r: dict[str, Any], measure: str) -> str:
    return " ".join(r["cells"][measure]["text"].split())


def _events(db: Any, participant_id: int) -> dict[str, ScheduleEvent]:
    db.expire_all()
    rows = db.exec(select(ScheduleEvent).where(ScheduleEvent.participant_id == participant_id))
    return {e.key: e for e in rows}


@pytest.fixture
def history(world: factories.World, db: Any, api_as: Any) -> factories.World:
    """At 2027-04-20 (HEROES, anchor 2027-01-04): A1 has 3 in window, 1 late, 1 missed; A2 has
    1 early and 4 missed; A3 (anchor 2027-05-11) has its baseline draw open; B1 at site B has
    1 in window and 4 missed."""
    a3 = factories.make_participant(
        db,
        world.staff[("coordinator", "A")],
        world.sites["A"],
        world.study,  # type: ignore[arg-type]
        "A-003",
        anchor_date=date(2027, 5, 11),
    )
    db.commit()
    world.participants["A3"] = a3
    done = {
        ("A", "A1"): [
            ("ctdna_baseline:1", "2026-12-10", None),  # in window (12-07 → 12-21)
            ("qol:1", "2027-01-20", "forgot"),  # late (window closed 01-18)
            ("imaging:1", "2027-03-30", None),  # in window (03-15 → 04-12)
            ("qol:2", "2027-04-10", None),  # in window (03-28 → 04-18)
        ],
        ("A", "A2"): [("imaging:1", "2027-03-01", "scanner slot")],  # early
        ("B", "B1"): [("ctdna_baseline:1", "2026-12-10", None)],
    }
    with at():
        for (site, code), items in done.items():
            api = api_as("coordinator", site)
            p = world.participants[code]
            ev = _events(db, p.id)  # type: ignore[arg-type]
            for key, on, reason in items:
                body = {"completed_on": on} | ({"reason": reason} if reason else {})
                r = api.post(f"{P}/{p.id}/events/{ev[key].id}/complete", json=body)
                assert r.status_code == 200, r.get_json()
    return world


def test_overview_shows_the_figures_per_site_study_event_type_and_month(history, web_as):
    site_a = history.sites["A"]
    with at():
        html = web_as("nurse", "A").text("/adherence")
    # Site A × HEROES: A1 (5 due), A2 (5 due), A3 (nothing due, baseline draw open).
    summary = row(html, site="SITE-A", study="HEROES")
    assert counts(summary) == {
        "due": 10,
        "in_window": 3,
        "early": 1,
        "late": 1,
        "missed": 5,
        "open": 1,
    }
    assert text(summary, "in_window_pct") == "30.0 %"
    # 4 questionnaires due (qol:1 and qol:2 of A1 and A2), 2 received (A1's).
    assert text(summary, "compliance_pct") == "50.0 % (2/4)"
    by_type = {
        r["keys"]["event-type"]: counts(r) for r in rows_of(html) if "event-type" in r["keys"]
    }
    assert by_type == {
        "ctdna_draw": {"due": 4, "in_window": 1, "early": 0, "late": 0, "missed": 3, "open": 1},
        "imaging": {"due": 2, "in_window": 1, "early": 1, "late": 0, "missed": 0, "open": 0},
        "questionnaire": {"due": 4, "in_window": 1, "early": 0, "late": 1, "missed": 2, "open": 0},
    }
    questionnaire = row(html, **{"event-type": "questionnaire"})
    assert text(questionnaire, "compliance_pct") == "50.0 % (2/4)"
    assert text(row(html, **{"event-type": "imaging"}), "compliance_pct") == "—"
    # By month the window closes, default: the last 12 months (2026-05 → 2027-04), every month.
    months = [r["keys"]["month"] for r in rows_of(html) if "month" in r["keys"]]
    assert months == [f"2026-{m:02d}" for m in range(5, 13)] + [
        f"2027-{m:02d}" for m in range(1, 5)
    ]
    assert counts(row(html, month="2026-12")) == {
        "due": 2,
        "in_window": 1,
        "early": 0,
        "late": 0,
        "missed": 1,
        "open": 0,
    }
    assert counts(row(html, month="2027-01"))["late"] == 1
    assert counts(row(html, month="2027-04")) == {
        "due": 6,
        "in_window": 2,
        "early": 1,
        "late": 0,
        "missed": 3,
        "open": 1,
    }
    assert counts(row(html, month="2027-02"))["due"] == 0
    assert "How we count" in html and "window has closed" in html
    # Every non-zero count links to the participants behind it, with the row's filters.
    link = urlsplit(summary["cells"]["missed"]["href"])
    assert link.path == "/adherence/participants"
    assert parse_qs(link.query) == {
        "site": [str(site_a.id)],
        "study": ["HEROES"],
        "from": ["2026-05"],
        "to": ["2027-04"],
        "measure": ["missed"],
    }
    assert summary["cells"]["early"]["href"]
    assert "month=2027-04" in row(html, month="2027-04")["cells"]["open"]["href"]


def test_filters_narrow_the_figures(history, web_as):
    with at():
        html = web_as("coordinator", "A").text(
            "/adherence?event_type=questionnaire&from=2027-01&to=2027-03"
        )
    # Only qol:1 (closes in January) of A1 (late) and A2 (missed).
    assert counts(row(html, site="SITE-A", study="HEROES")) == {
        "due": 2,
        "in_window": 0,
        "early": 0,
        "late": 1,
        "missed": 1,
        "open": 0,
    }
    assert [r["keys"]["event-type"] for r in rows_of(html) if "event-type" in r["keys"]] == [
        "questionnaire"
    ]
    assert [r["keys"]["month"] for r in rows_of(html) if "month" in r["keys"]] == [
        "2027-01",
        "2027-02",
        "2027-03",
    ]
    # The filters survive into the drill-down links.
    href = row(html, month="2027-01")["cells"]["late"]["href"]
    assert parse_qs(urlsplit(href).query)["event_type"] == ["questionnaire"]


def test_a_nurse_of_site_a_sees_no_site_b_numbers(history, web_as):
    site_b = history.sites["B"]
    with at():
        a = web_as("nurse", "A").text("/adherence")
        b = web_as("nurse", "B").text("/adherence")
        other = web_as("nurse", "A").text(f"/adherence?site={site_b.id}", status=404)
        drill = web_as("nurse", "A").text(
            f"/adherence/participants?site={site_b.id}&measure=due", status=404
        )
        csv_other = web_as("monitor", "A").get(f"/adherence.csv?site={site_b.id}")
    assert rows_of(a, site="SITE-B") == []
    assert "SITE-B" not in a and "B-001" not in a
    # Site B's own nurse sees B1's figures only: 1 in window, 4 missed.
    assert counts(row(b, site="SITE-B", study="HEROES")) == {
        "due": 5,
        "in_window": 1,
        "early": 0,
        "late": 0,
        "missed": 4,
        "open": 0,
    }
    assert "SITE-A" not in b
    assert "Not found" in other and "site not found" in drill
    assert csv_other.status_code == 404


def test_drill_down_lists_exactly_the_participants_behind_each_count(history, web_as, db):
    with at():
        web = web_as("investigator", "A")
        html = web.text("/adherence")
        checked = 0
        for r in rows_of(html):
            for measure in FIGURES:
                cell = r["cells"].get(measure)
                if cell is None or cell["href"] is None:
                    continue
                people = web.text(cell["href"])
                listed = rows_of(people)
                assert listed, cell["href"]
                assert sum(int(text(p, measure)) for p in listed) == int(cell["text"]), cell["href"]
                checked += 1
        assert checked > 20
        missed = web.text(row(html, site="SITE-A", study="HEROES")["cells"]["missed"]["href"])
        late_jan = web.text(row(html, month="2027-01")["cells"]["late"]["href"])
        open_now = web.text(row(html, **{"event-type": "ctdna_draw"})["cells"]["open"]["href"])
    # Missed at site A: A2 4 (ctdna ×2, qol ×2), A1 1 (ctdna:1); A3 none, so not listed.
    assert {p["keys"]["participant"]: int(text(p, "missed")) for p in rows_of(missed)} == {
        "A-002": 4,
        "A-001": 1,
    }
    assert [p["keys"]["participant"] for p in rows_of(missed)] == ["A-002", "A-001"]
    a1 = history.participants["A1"]
    assert f'href="/participants/{a1.id}"' in missed
    by_code = {p["keys"]["participant"]: p for p in rows_of(missed)}
    assert text(by_code["A-001"], "in_window_pct") == "60.0 %"  # 3 of A1's 5 due events
    assert text(by_code["A-002"], "in_window_pct") == "0.0 %"
    assert [p["keys"]["participant"] for p in rows_of(late_jan)] == ["A-001"]
    assert [p["keys"]["participant"] for p in rows_of(open_now)] == ["A-003"]
    assert "+336" not in missed  # participant codes only, never phones


def test_drill_down_in_window_pct_is_the_participants_own(history, web_as):
    with at():
        html = web_as("nurse", "A").text("/adherence/participants?measure=due")
    due = {p["keys"]["participant"]: p for p in rows_of(html)}
    assert set(due) == {"A-001", "A-002"}
    # A1: 3 of 5 in window; A2: none of 5.
    assert (text(due["A-001"], "due"), text(due["A-001"], "in_window_pct")) == ("5", "60.0 %")
    assert (text(due["A-002"], "due"), text(due["A-002"], "in_window_pct")) == ("5", "0.0 %")
    assert "Due: 10 events, 2 participants" in html


def test_page_figures_equal_the_json_api(history, web_as, api_as):
    site_a = history.sites["A"]
    wide = "from=2026-01&to=2031-12"  # every event of the protocol (3 years of monitoring)
    with at():
        html = web_as("coordinator", "A").text(f"/adherence?site={site_a.id}&study=HEROES&{wide}")
        api = api_as("coordinator", "A").get(f"/api/v1/sites/{site_a.id}/adherence?study=HEROES")
        study = api_as("coordinator", "A").get("/api/v1/studies/HEROES/adherence").get_json()
    body = api.get_json()
    total = body["total"]
    expected = {
        "due": total["due"],
        "in_window": total["completed_in_window"],
        "early": total["completed_early"],
        "late": total["completed_late"],
        "missed": total["missed"],
        "open": total["open"],
    }
    assert counts(row(html, site="SITE-A", study="HEROES")) == expected
    assert study["total"]["due"] == expected["due"]
    assert text(row(html, site="SITE-A", study="HEROES"), "in_window_pct") == (
        f"{total['in_window_pct']:.1f} %"
    )
    for f in body["by_event_type"]:
        if f["due"] == 0 and f["open"] == 0:
            continue
        page = counts(row(html, **{"event-type": f["event_type"]}))
        assert page == {
            "due": f["due"],
            "in_window": f["completed_in_window"],
            "early": f["completed_early"],
            "late": f["completed_late"],
            "missed": f["missed"],
            "open": f["open"],
        }, f["event_type"]
    q = body["questionnaire_compliance"]
    assert text(row(html, site="SITE-A", study="HEROES"), "compliance_pct") == (
        f"{q['pct']:.1f} % ({q['received']}/{q['expected']})"
    )


def _csv(resp: Any) -> list[list[str]]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return list(csv.reader(io.StringIO(resp.get_data().decode("utf-8-sig"))))


def _exports(db: Any) -> list[AuditEvent]:
    db.expire_all()
    return list(
        db.exec(
            select(AuditEvent)
            .where(AuditEvent.action == "adherence.export")
            .order_by(col(AuditEvent.id))
        ).all()
    )


def test_csv_export_matches_the_page_and_is_audited(history, web_as, db):
    site_a = history.sites["A"]
    with at():
        monitor = web_as("monitor", "A")  # read-only, but reviewing adherence is their job
        html = monitor.text("/adherence")
        resp = monitor.get("/adherence.csv?view=summary")
        by_month = _csv(monitor.get("/adherence.csv?view=month"))
        by_type = _csv(monitor.get("/adherence.csv?view=event_type&event_type=imaging"))
        people = monitor.get(f"/adherence.csv?view=participants&site={site_a.id}&measure=missed")
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    disposition = resp.headers["Content-Disposition"]
    assert disposition == 'attachment; filename="adherence-summary-2027-04-20.csv"'
    assert resp.get_data().startswith("\ufeff".encode())
    summary = _csv(resp)
    header = summary[0]
    assert header[:4] == ["site_code", "site_name", "study", "due"]
    assert len(summary) == 2
    data = dict(zip(header, summary[1], strict=True))
    page = row(html, site="SITE-A", study="HEROES")
    assert data["site_code"] == "SITE-A"
    for measure in FIGURES:
        assert int(data[measure]) == int(text(page, measure)), measure
    # Numbers, not "30.0 %": a spreadsheet can sum and chart them.
    assert data["in_window_pct"] == "30.0"
    assert data["questionnaire_compliance_pct"] == "50.0"
    assert (data["questionnaires_due"], data["questionnaires_received"]) == ("4", "2")
    month_rows = {r[0]: r for r in by_month[1:]}
    assert len(month_rows) == 12
    assert month_rows["2027-04"][1:8] == ["6", "2", "33.3", "1", "0", "3", "1"]
    assert month_rows["2026-06"][1:3] == ["0", "0"] and month_rows["2026-06"][3] == ""
    assert by_type[1:] == [["imaging", "2", "1", "50.0", "1", "0", "0", "0", "0", "0", ""]]
    people_rows = _csv(people)
    assert people_rows == [
        ["study_code", "site_code", "study", "measure", "count", "due", "in_window_pct"],
        ["A-002", "SITE-A", "HEROES", "missed", "4", "5", "0.0"],
        ["A-001", "SITE-A", "HEROES", "missed", "1", "5", "60.0"],
    ]
    assert "+336" not in people.get_data(as_text=True)
    # One audit row per export: who, which view with which filters, how many rows.
    exports = _exports(db)
    assert [e.entity_id for e in exports] == ["summary", "month", "event_type", "participants"]
    user = history.staff[("monitor", "A")]
    assert all(e.actor == f"staff:{user.id}" and e.actor_user_id == user.id for e in exports)
    assert exports[0].after == {
        "view": "summary",
        "filters": {
            "site": "all my sites",
            "study": "all studies",
            "event_type": "all event types",
            "from": "2026-05",
            "to": "2027-04",
        },
        "rows": 1,
        "site_ids": [site_a.id],
    }
    assert exports[2].after["filters"]["event_type"] == "imaging"  # type: ignore[index]
    assert exports[3].after["rows"] == 2  # type: ignore[index]
    assert exports[3].after["filters"]["measure"] == "missed"  # type: ignore[index]
    assert exports[3].site_id == site_a.id
    # Looking at the page writes nothing.
    with at():
        monitor.text("/adherence")
    assert len(_exports(db)) == 4


def test_csv_neutralises_formula_looking_values(history, web_as, db):
    site = history.sites["A"]
    site.name = '=HYPERLINK("http://evil.test","click")'
    db.add(site)
    factories.make_participant(
        db,
        history.staff[("coordinator", "A")],
        site,
        history.study,  # type: ignore[arg-type]
        "-2+3",
    )
    db.commit()
    with at():
        summary = _csv(web_as("coordinator", "A").get("/adherence.csv"))
        people = _csv(
            web_as("coordinator", "A").get("/adherence.csv?view=participants&measure=due")
        )
    assert summary[1][1] == '\'=HYPERLINK("http://evil.test","click")'
    assert "'-2+3" in [r[0] for r in people[1:]]
    assert all(not r[0].startswith(("=", "+", "-", "@")) for r in people[1:])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("/adherence?from=2026-13", "from"),
        ("/adherence?to=27-04", "to"),
        ("/adherence?from=2027-05&to=2027-04", "from"),
        ("/adherence?event_type=bloodletting", "event_type"),
        ("/adherence?study=NOPE", "study"),
        ("/adherence?site=abc", "site"),
        ("/adherence/participants?measure=sometimes", "measure"),
        ("/adherence/participants", "measure"),
        ("/adherence/participants?measure=due&month=2027-00", "month"),
        ("/adherence.csv?view=everything", "view"),
        ("/adherence.csv?view=participants", "measure"),
    ],
)
def test_bad_filters_are_a_clear_400_page(history, web_as, db, query, field):
    with at():
        html = web_as("nurse", "A").text(query, status=400)
    assert "This request cannot be used" in html
    assert f"<strong>{field}</strong>" in html
    assert _exports(db) == []


def test_pages_need_a_login(client):
    for path in ("/adherence", "/adherence/participants?measure=due", "/adherence.csv"):
        resp = client.get(path)
        assert resp.status_code in (302, 401), path
        assert resp.status_code != 200
