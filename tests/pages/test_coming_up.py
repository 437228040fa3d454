"""Today's "coming up" list (issue 12, item 6): the windows opening or closing in the next 7 days
at my sites, with window dates and weekdays in the participant's time zone and what happens
next; its CSV export has every row, formula-safe cells, and is audited like the adherence CSV."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from typing import Any

from sqlmodel import select

from server import audit, worklist
from server.participants.models import ParticipantStatus
from server.schedules import service as schedules
from tests.pages.test_today import at, count, events_of, ids, now, section

# The world's HEROES participants are anchored on Monday 2027-01-04 (Paris and Boston): their
# first ctDNA window is 2027-03-22 .. 2027-04-05, the first imaging window 2027-03-15 .. 04-12,
# the month-3 questionnaire's 2027-03-28 .. 04-18.
BEFORE_CTDNA_OPENS = "2027-03-18T10:00:00"  # Thursday, 11:00 in Paris, 06:00 in Boston
BEFORE_CTDNA_CLOSES = "2027-04-01T10:00:00"  # Thursday


def test_windows_opening_in_the_next_seven_days_at_my_sites(world, db, web_as):
    a1, a2, b1 = (world.participants[k] for k in ("A1", "A2", "B1"))
    with at(BEFORE_CTDNA_OPENS):
        html = section(web_as("coordinator", "A").text("/"), "coming-up")
        b_html = section(web_as("coordinator", "B").text("/"), "coming-up")
    # Imaging opened already and closes after the week; the questionnaire opens after it.
    assert ids(html, "event-id") == [
        events_of(db, a1.id)["ctdna:1"].id,
        events_of(db, a2.id)["ctdna:1"].id,
    ]
    assert count(html) == 2
    assert "B-001" not in html and "A-001" in html and "A-002" in html
    assert "Signatera ctDNA draw" in html
    # The window with weekdays, in the participant's zone, and what happens next.
    assert re.search(r">Mon 2027-03-22</span> – <span[^>]*>Mon 2027-04-05<", html)
    assert "Europe/Paris" in html and "opens in 4 days" in html
    assert ids(b_html, "event-id") == [events_of(db, b1.id)["ctdna:1"].id]
    assert "America/New_York" in b_html and "A-00" not in b_html


def test_windows_closing_soon_and_what_leaves_the_list(world, db, web_as):
    a1, a2 = world.participants["A1"], world.participants["A2"]
    with at(BEFORE_CTDNA_CLOSES):
        # A2's draw is done: nothing to book. A1's is still to do, its window closes Monday.
        schedules.complete_event(
            session=db,
            participant=a2,
            event=events_of(db, a2.id)["ctdna:1"],
            completed_on=date(2027, 4, 1),
            now=now(),
            actor="test",
        )
        db.commit()
        html = section(web_as("nurse", "A").text("/"), "coming-up")
    assert ids(html, "event-id") == [events_of(db, a1.id)["ctdna:1"].id]
    assert "open, last day in 4 days" in html
    with at("2027-04-05T10:00:00"):
        html = section(web_as("nurse", "A").text("/"), "coming-up")
        assert "open, last day today" in html
        a1.status = ParticipantStatus.WITHDRAWN
        db.add(a1)
        db.commit()
        html = section(web_as("nurse", "A").text("/"), "coming-up")
    assert "A-001" not in html  # withdrawn: nobody books for them


def test_the_row_says_what_happens_next(world, db):
    a1 = world.participants["A1"]
    event = events_of(db, a1.id)["ctdna:1"]
    row = worklist.ComingRow(event, a1, "SITE-A", date(2027, 3, 21))
    assert (row.opens_ahead, row.when) == (True, "opens tomorrow")
    row = worklist.ComingRow(event, a1, "SITE-A", date(2027, 4, 4))
    assert (row.opens_ahead, row.days_left, row.when) == (False, 1, "open, last day tomorrow")


def test_more_rows_than_the_page_shows_are_all_in_the_csv(world, db, web_as, monkeypatch):
    monkeypatch.setattr(worklist, "LIMIT", 1)
    with at(BEFORE_CTDNA_OPENS):
        web = web_as("coordinator", "A")
        html = section(web.text("/"), "coming-up")
        assert len(ids(html, "event-id")) == 1 and count(html) == 2
        assert "and 1 more" in html and 'href="/coming-up.csv"' in html
        resp = web.get("/coming-up.csv")
    assert resp.status_code == 200
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0] == worklist_columns()
    assert [r[1] for r in rows[1:]] == ["A-001", "A-002"]
    assert rows[1][2:9] == [
        "Signatera ctDNA draw",
        "ctdna_draw",
        "2027-03-22",
        "2027-04-05",
        "2027-03-29",
        "Europe/Paris",
        "planned",
    ]


def worklist_columns() -> list[str]:
    from api.today_pages import COMING_UP_COLUMNS

    return COMING_UP_COLUMNS


def test_the_csv_is_formula_safe_audited_and_scoped(world, db, web_as):
    site = world.sites["A"]
    site.code = "-A"  # site codes may start with "-": a spreadsheet would read a formula
    db.add(site)
    db.commit()
    with at(BEFORE_CTDNA_OPENS):
        resp = web_as("monitor", "A").get("/coming-up.csv")
        other = web_as("monitor", "A").get(f"/coming-up.csv?site={world.sites['B'].id}")
    assert resp.status_code == 200 and other.status_code == 404
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-store"
    assert "attachment" in resp.headers["Content-Disposition"]
    body = resp.get_data(as_text=True)
    assert "\r\n'-A,A-001," in body and "B-001" not in body
    exports = db.exec(
        select(audit.AuditEvent).where(audit.AuditEvent.action == "worklist.export")
    ).all()
    assert len(exports) == 1
    row: Any = exports[0]
    assert row.actor_user_id == world.staff[("monitor", "A")].id
    assert row.entity_id == "coming_up" and row.site_id == site.id
    assert row.after["rows"] == 2 and row.after["filters"]["days"] == 7
