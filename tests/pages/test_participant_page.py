"""A participant's page: header, timeline with windows, completion recorded from it, decisions,
ctDNA and imaging results (tables and chart data), QoL scores, messages, alerts, audit history;
site scoping (404), monitors (no forms, no phone numbers, forged posts 403), the vendored chart
library, and queries that do not grow with the schedule."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from sqlmodel import select

from notifications import outbox
from notifications.models import MessageStatus, OutboxMessage
from server.adherence import service as adherence
from server.alerts.models import Alert
from server.audit import AuditEvent
from server.participants import service as participants
from server.participants.mobile import send_activation_code
from server.participants.models import Locale, ParticipantStatus
from server.schedules.models import Decision, DecisionStatus, EventStatus, ScheduleEvent
from server.surveys import service as surveys
from tests import factories

# 10:00 in Paris: A1's first 12-weekly ctDNA draw (target 2027-03-29) has its window open.
T = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)
A1_PHONE = "+33612345678"
STATIC = Path(__file__).resolve().parents[2] / "api" / "static"


def at(moment: datetime = T) -> Any:
    return time_machine.travel(moment, tick=False)


@pytest.fixture(autouse=True)
def _frozen(world: Any) -> Any:
    """Every test runs at T (after the world is built; log in after this too: a staff session
    opened before a jump in time would have expired)."""
    with at():
        yield


def url(participant: Any) -> str:
    return f"/participants/{participant.id}"


def event(db, participant, key) -> ScheduleEvent:
    db.expire_all()  # see what the page requests committed
    return db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == participant.id, ScheduleEvent.key == key
        )
    ).one()


def complete_url(participant, ev) -> str:
    return f"/participants/{participant.id}/events/{ev.id}/complete"


def audit_rows(db, action, entity_id=None) -> list[AuditEvent]:
    q = select(AuditEvent).where(AuditEvent.action == action)
    if entity_id is not None:
        q = q.where(AuditEvent.entity_id == str(entity_id))
    return list(db.exec(q).all())


class Page(HTMLParser):
    """Just enough of the DOM for the tests: the text of every element with an id, the forms,
    the scripts and every URL the page refers to."""

    VOID = {"input", "br", "img", "meta", "link", "hr", "source", "col", "wbr"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: dict[str, list[str]] = {}
        self.forms: list[dict[str, Any]] = []
        self.scripts: list[dict[str, Any]] = []
        self.urls: list[str] = []
        self.attr_names: set[str] = set()
        self._stack: list[tuple[str, str | None]] = []
        self._script: dict[str, Any] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.attr_names.update(a)
        for name in ("href", "src", "action"):
            if a.get(name):
                self.urls.append(a[name] or "")
        if tag == "form":
            self.forms.append({**a, "fields": []})
        if tag in ("input", "select", "textarea") and self.forms and a.get("name"):
            self.forms[-1]["fields"].append(a["name"])
        if tag == "script":
            self._script = {**a, "text": ""}
            self.scripts.append(self._script)
        if tag in self.VOID:
            return
        self._stack.append((tag, a.get("id")))
        if a.get("id"):
            self.ids[a["id"] or ""] = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script["text"] += data
        for _, element_id in self._stack:
            if element_id:
                self.ids[element_id].append(data)

    def text(self, element_id: str) -> str:
        """The element's text, whitespace collapsed."""
        return " ".join(" ".join(self.ids[element_id]).split())

    def data(self) -> dict[str, Any]:
        block = next(s for s in self.scripts if s.get("id") == "participant-chart-data")
        return json.loads(block["text"])  # type: ignore[no-any-return]

    def post_forms(self) -> list[dict[str, Any]]:
        return [f for f in self.forms if (f.get("method") or "").lower() == "post"]


# --- header and timeline -------------------------------------------------------------------------


def test_header_and_timeline_show_the_events_with_their_windows(world, web_as, db):
    a1 = world.participants["A1"]
    html = web_as("nurse", "A").text(url(a1))
    page = Page(html)
    figures = adherence.for_participant(session=db, participant_id=a1.id, now=T)["total"]
    head = page.text("participant-title") + " " + page.text("participant-facts")
    for shown in ("A-001", "SITE-A", "stop", "2027-01-04", "Europe/Paris", "French", A1_PHONE):
        assert shown in head, shown
    summary = page.text("adherence-summary")
    # The adherence service's figures: the baseline draw and questionnaire were never recorded.
    assert (figures["due"], figures["missed"]) == (2, 2)
    assert "0% in window (0 of 2 due)" in summary and "2 missed" in summary

    draw = event(db, a1, "ctdna:1")
    row = page.text(f"event-{draw.id}-summary")  # the event's row (its form is below it)
    assert draw.label in row and "ctdna:1" in row
    assert "Open" in row and "2027-03-22 – 2027-04-05" in row and "2027-03-29" in row
    baseline = event(db, a1, "ctdna_baseline:1")
    assert baseline.status == EventStatus.PLANNED  # stored; the page shows it as of now:
    assert "Missed" in page.text(f"event-{baseline.id}-summary")
    assert "2026-12-07 – 2026-12-21" in page.text(f"event-{baseline.id}-summary")

    # Every event is on the page; beyond the next ten, they fold into "all future events".
    events = db.exec(select(ScheduleEvent).where(ScheduleEvent.participant_id == a1.id)).all()
    assert all(f"event-{e.id}" in page.ids for e in events)
    future = [e for e in events if e.window_open_at > T]
    later = page.text("timeline").split("All future events (")[1]
    assert later.startswith(f"{len(future) - 10} more")

    # A form to record each current or next event, with the outcome its type records.
    forms = {f["action"]: f["fields"] for f in page.post_forms()}
    assert forms[complete_url(a1, draw)] == [
        "csrf_token",
        "completed_on",
        "ctdna",
        "pam_mutation",
        "reason",
    ]
    imaging = event(db, a1, "imaging:1")
    assert "recist" in forms[complete_url(a1, imaging)]
    far = max(future, key=lambda e: e.target_at)
    assert complete_url(a1, far) not in forms  # far ahead: no form
    # The date defaults to today where the participant lives.
    assert re.search(rf'id="done-{draw.id}"[^>]*value="2027-03-30"', html)


def test_filters_narrow_the_timeline_and_bad_values_are_a_400_page(world, web_as, db):
    a1 = world.participants["A1"]
    web = web_as("nurse", "A")
    page = Page(web.text(url(a1) + "?status=missed"))
    missed = {
        e.id
        for e in db.exec(select(ScheduleEvent).where(ScheduleEvent.participant_id == a1.id))
        if e.window_close_at <= T
    }
    shown = {int(i.split("-")[1]) for i in page.ids if re.fullmatch(r"event-\d+", i)}
    assert shown == missed and len(missed) == 2
    imaging = Page(web.text(url(a1) + "?type=imaging"))
    kinds = {
        db.get(ScheduleEvent, int(i.split("-")[1])).event_type.value
        for i in imaging.ids
        if re.fullmatch(r"event-\d+", i)
    }
    assert kinds == {"imaging"}
    bad = web.text(url(a1) + "?status=lost", status=400)
    assert "status" in bad and "must be one of" in bad


# --- recording completion ------------------------------------------------------------------------


def test_completing_an_event_from_the_page_changes_it_and_writes_the_audit_trail(world, web_as, db):
    a1 = world.participants["A1"]
    nurse = world.staff[("nurse", "A")]
    web = web_as("nurse", "A")
    draw = event(db, a1, "ctdna:1")
    resp = web.post(
        complete_url(a1, draw), data={"completed_on": "2027-03-29", "ctdna": "negative"}
    )
    assert resp.status_code == 303
    assert resp.headers["Location"].endswith(f"{url(a1)}#event-{draw.id}")
    done = event(db, a1, "ctdna:1")
    assert done.status == EventStatus.COMPLETED
    assert done.completed_on == date(2027, 3, 29) and done.outcome == {"ctdna": "negative"}
    assert done.is_out_of_window is False
    (row,) = audit_rows(db, "event.complete", draw.id)
    assert row.actor_user_id == nurse.id and row.after["status"] == "completed"
    assert row.before["status"] in ("planned", "open")

    html = web.text(url(a1))
    page = Page(html)
    assert f"Recorded: {draw.label} done on 2027-03-29." in html
    shown = page.text(f"event-{draw.id}-summary")
    assert "Done" in shown and "ctDNA negative" in shown
    assert complete_url(a1, draw) not in [f["action"] for f in page.post_forms()]
    assert "Event recorded done" in page.text("audit")

    # Outside the window: allowed with a reason, flagged late.
    baseline = event(db, a1, "ctdna_baseline:1")
    resp = web.post(
        complete_url(a1, baseline),
        data={"completed_on": "2027-01-02", "reason": "drawn at the anchor visit"},
    )
    assert resp.status_code == 303
    late = event(db, a1, "ctdna_baseline:1")
    assert late.status == EventStatus.COMPLETED and late.is_out_of_window
    assert audit_rows(db, "event.complete", baseline.id)[0].reason == ("drawn at the anchor visit")
    assert "late" in Page(web.text(url(a1))).text(f"event-{baseline.id}-summary")


def test_invalid_completion_is_a_422_page_with_the_message_and_nothing_changes(world, web_as, db):
    a1 = world.participants["A1"]
    web = web_as("coordinator", "A")
    draw = event(db, a1, "ctdna:1")
    baseline = event(db, a1, "ctdna_baseline:1")
    cases = [
        (draw, {"completed_on": "2027-03-31"}, "completed_on", "cannot be in the future"),
        (baseline, {"completed_on": "2027-03-25"}, "reason", "required: the date is outside"),
        (draw, {"completed_on": "30/03/2027"}, "completed_on", "a date (YYYY-MM-DD)"),
        (draw, {"completed_on": "2027-03-29", "ctdna": "maybe"}, "ctdna", "one of positive"),
        (draw, {"completed_on": "2027-03-29", "reason": "x" * 501}, "reason", "at most 500"),
    ]
    for ev, data, field, message in cases:
        resp = web.post(complete_url(a1, ev), data={**data, "reason": data.get("reason", "")})
        assert resp.status_code == 422, (data, resp.status_code)
        page = Page(resp.get_data(as_text=True))
        # The message sits next to the field, in the event's own form, which stays open.
        assert message in page.text(
            f"{field}-{ev.id}-error" if field != "completed_on" else f"done-{ev.id}-error"
        ), data
        assert "Not recorded" in page.text("timeline")
    # What the user typed comes back.
    resp = web.post(complete_url(a1, baseline), data={"completed_on": "2027-03-25", "reason": ""})
    assert 'value="2027-03-25"' in resp.get_data(as_text=True)
    assert event(db, a1, "ctdna:1").status in (EventStatus.PLANNED, EventStatus.OPEN)
    assert event(db, a1, "ctdna_baseline:1").completed_on is None
    assert audit_rows(db, "event.complete") == []
    # An event already completed cannot be completed again: a 409 page, nothing changed.
    ok = web.post(complete_url(a1, draw), data={"completed_on": "2027-03-29"})
    assert ok.status_code == 303
    again = web.post(complete_url(a1, draw), data={"completed_on": "2027-03-30"})
    assert again.status_code == 409 and "cannot be completed" in again.get_data(as_text=True)
    assert event(db, a1, "ctdna:1").completed_on == date(2027, 3, 29)
    assert len(audit_rows(db, "event.complete")) == 1


# --- monitors and scoping ------------------------------------------------------------------------


def test_monitor_sees_no_form_no_phone_number_and_a_forged_post_is_403(world, web_as, db):
    a1 = world.participants["A1"]
    coordinator = world.staff[("coordinator", "A")]
    # A phone change leaves both numbers in the audit trail (and one in a staff note).
    participants.update(
        session=db,
        user=coordinator,
        participant=a1,
        changes={"phone": "+33698765432"},
        reason="new number, confirmed by calling +33698765432",
        now=T,
    )
    db.commit()
    html = web_as("monitor", "A").text(url(a1))
    page = Page(html)
    for number in (A1_PHONE, "+33698765432", "612345678", "698765432"):
        assert number not in html, number
    assert "+33•••••••32" in page.text("participant-facts")
    assert "+33•••••••78" in page.text("messages")  # the welcome went to the old number
    assert "Participant changed" in page.text("audit") and "+33•••••••78" in page.text("audit")
    assert page.text("audit").count("Participant enrolled") == 1
    assert "+33" not in json.dumps(page.data())
    # No write form at all: the only POST form is the header's log out.
    assert [f["action"] for f in page.post_forms()] == ["/logout"]
    assert "Record done" not in html

    # The same page for a nurse does show the numbers (so the test above can fail).
    nurse_html = web_as("nurse", "A").text(url(a1))
    assert "+33698765432" in nurse_html and A1_PHONE in nurse_html

    draw = event(db, a1, "ctdna:1")
    monitor = web_as("monitor", "A")
    forged = monitor.post(complete_url(a1, draw), data={"completed_on": "2027-03-29"})
    assert forged.status_code == 403
    decision = monitor.post(f"{url(a1)}/decisions/1/record", data={"regimen": "x"})
    assert decision.status_code == 403
    assert event(db, a1, "ctdna:1").status != EventStatus.COMPLETED
    assert audit_rows(db, "event.complete") == []


def test_another_sites_participant_is_the_same_404_as_a_missing_one(world, web_as, db):
    b1 = world.participants["B1"]
    web = web_as("nurse", "A")
    csrf = re.compile(r'name="csrf_token" value="[^"]+"')
    other = csrf.sub("", web.text(url(b1), status=404))
    missing = csrf.sub("", web.text(f"/participants/{b1.id + 10_000}", status=404))
    assert other == missing and "B-001" not in other
    # Writes too: scope comes before the role, so even a monitor gets 404, not 403.
    draw = event(db, b1, "ctdna:1")
    assert web.post(complete_url(b1, draw), data={"completed_on": "2027-03-29"}).status_code == (
        404
    )
    monitor = web_as("monitor", "A")
    assert monitor.post(complete_url(b1, draw), data={}).status_code == 404
    # An event of another participant through one's own participant's URL: 404 too.
    a1 = world.participants["A1"]
    assert (
        web.post(
            f"{url(a1)}/events/{draw.id}/complete", data={"completed_on": "2027-03-29"}
        ).status_code
        == 404
    )
    assert event(db, b1, "ctdna:1").status != EventStatus.COMPLETED
    # Site B's own nurse sees it.
    assert "B-001" in web_as("nurse", "B").text(url(b1))


# --- results, QoL, messages, alerts --------------------------------------------------------------


def _ctdna(accession, call, collected, mtm):
    return {
        "lab": "natera",
        "study": "HEROES",
        "study_code": "A-001",
        "accession_id": accession,
        "collected_at": collected,
        "call": call,
        "mtm_per_ml": mtm,
    }


def test_results_are_in_the_tables_and_the_chart_data_and_alerts_are_listed(
    world, web_as, api_as, db
):
    a1 = world.participants["A1"]
    web = web_as("nurse", "A")
    empty = Page(web.text(url(a1)))
    assert "No ctDNA or imaging result yet." in empty.text("ctdna")
    assert empty.data()["results"]["ctdna"] == [] and "ctdna-chart" not in empty.ids
    lab = api_as("coordinator", "A")
    for body in (
        _ctdna("BASE-1", "negative", "2026-12-14T09:00:00+01:00", 0.0),
        # Positive with no MTM/mL reported: still a positive point and an alert.
        _ctdna("ACC-2", "positive", "2027-03-29T09:00:00+02:00", None),
    ):
        assert lab.post("/api/v1/results/ctdna", json=body).status_code == 201
    scan = {
        "lab": "pacs",
        "study": "HEROES",
        "study_code": "A-001",
        "accession_id": "IMG-1",
        "modality": "ct",
        "performed_on": "2027-03-27",
        "recist": "PD",
    }
    assert lab.post("/api/v1/results/imaging", json=scan).status_code == 201
    page = Page(web.text(url(a1)))
    table = page.text("ctdna-table")
    assert "2026-12-14 Negative 0.0" in table and "2027-03-29 Positive —" in table
    assert "2027-03-27 CT PD" in page.text("imaging-table")
    assert "Progression recorded on 2027-03-27" in page.text("ctdna")
    data = page.data()["results"]
    assert data["ctdna"] == [
        {"date": "2026-12-14", "call": "negative", "mtm_per_ml": 0.0},
        {"date": "2027-03-29", "call": "positive", "mtm_per_ml": None},
    ]
    assert data["imaging"] == [{"date": "2027-03-27", "modality": "CT", "recist": "PD"}]
    assert data["anchor_date"] == "2027-01-04"
    assert "ctdna-chart" in page.ids
    # The result completed the draw it fulfils; the timeline says so.
    draw = event(db, a1, "ctdna:1")
    assert "Done" in page.text(f"event-{draw.id}-summary")
    # The alerts they opened are listed, with a link to each.
    alerts = db.exec(select(Alert).where(Alert.participant_id == a1.id)).all()
    assert {a.kind.value for a in alerts} == {"ctdna_positive", "progression"}
    listed = page.text("alerts")
    assert "ctDNA turned positive" in listed and "Radiological progression" in listed
    assert "Critical" in listed
    for a in alerts:
        assert f"/alerts/{a.id}" in page.urls
    assert "result.create" in page.text("audit")


def test_qol_scores_appear_after_a_saved_response(world, web_as, db):
    a1 = world.participants["A1"]
    web = web_as("nurse", "A")
    assert "No questionnaire answered yet." in Page(web.text(url(a1))).text("qol")
    answers = {f"q{i}": 1 for i in range(1, 29)} | {"q29": 5, "q30": 6}
    with at(datetime(2027, 1, 5, 10, 0, tzinfo=UTC)):
        surveys.save(
            session=db,
            participant=a1,
            event=event(db, a1, "qol:1"),
            answers=answers,
            submit=True,
            channel="web",
            now=datetime.now(UTC),
        )
        db.commit()
    page = Page(web.text(url(a1)))
    table = page.text("qol-table-eortc_qlq_c30")
    # Global health: ((5 + 6) / 2 - 1) / 6 × 100; physical functioning all "not at all": 100.
    assert "Scale 2027-01-05" in table
    assert "Global health status / QoL QL2 75.0" in table
    assert "Physical functioning PF2 100.0" in table and "Fatigue FA 0.0" in table
    (series,) = [s for s in page.data()["qol"][0]["series"] if s["scale"] == "QL2"]
    assert series["points"] == [{"date": "2027-01-05", "score": 75.0}]


def test_messages_are_listed_with_their_status_and_no_text(world, web_as, db):
    a1 = world.participants["A1"]
    # A code asked for at T (10:00 in Paris; enrolment may have fallen in the participant's night).
    send_activation_code(session=db, participant=a1, now=T, actor="test")
    db.commit()
    rows = db.exec(select(OutboxMessage).where(OutboxMessage.participant_id == a1.id)).all()
    welcome = next(m for m in rows if m.kind == "welcome")
    activation = [m for m in rows if m.kind == "activation_code"][-1]
    code = re.search(r"\b\d{6,8}\b", activation.body)
    assert code, activation.body
    outbox.advance(db, welcome, MessageStatus.FAILED, source="twilio", now=T, error_code=30003)
    db.commit()
    page = Page(web_as("nurse", "A").text(url(a1)))
    failed = page.text(f"message-{welcome.id}")
    assert "Welcome" in failed and "Failed" in failed and "30003" in failed
    assert A1_PHONE in failed
    pending = page.text(f"message-{activation.id}")
    assert "App activation code" in pending and "Waiting to send" in pending
    # The texts carry the participant's credentials (activation code, survey links): not shown.
    assert code.group(0) not in page.text("participant-page")


# --- decisions (NCT07239271) ---------------------------------------------------------------------


def test_decision_is_shown_and_the_team_records_its_choice_from_the_page(world, web_as, db):
    study = factories.make_study(db, "NCT07239271", "nct07239271")
    p = factories.make_participant(
        db,
        world.staff[("coordinator", "A")],
        world.sites["A"],
        study,
        "NEO-100",
        cohort="adaptive",
        status=ParticipantStatus.ACTIVE,
        timezone="Asia/Shanghai",
        locale=Locale.ZH,
    )
    db.commit()
    investigator = web_as("investigator", "A")
    for key, data in (
        ("ctdna_baseline:1", {"completed_on": "2027-01-03", "ctdna": "negative"}),
        (
            "ctdna_c1:1",
            {"completed_on": "2027-01-24", "ctdna": "positive", "pam_mutation": "no"},
        ),
        ("imaging_c2:1", {"completed_on": "2027-02-14", "recist": "SD"}),
    ):
        resp = investigator.post(complete_url(p, event(db, p, key)), data=data)
        assert resp.status_code == 303, resp.get_data(as_text=True)
    assert event(db, p, "ctdna_c1:1").outcome == {"ctdna": "positive", "pam_mutation": False}
    decision = db.exec(select(Decision).where(Decision.participant_id == p.id)).one()
    record = f"{url(p)}/decisions/{decision.id}/record"

    page = Page(investigator.text(url(p)))
    shown = page.text(f"decision-{decision.id}")
    assert "Recommended pyroht ×2" in shown
    # Each fact with its value and source (the draw and its date).
    assert (
        "ctdna after c1 positive ctDNA positive (recorded with the completion) · "
        "ctDNA draw after cycle 1 · 2027-01-24"
    ) in shown
    assert record in [f["action"] for f in page.post_forms()]
    # A nurse sees it but may not record a treatment choice (as in the API).
    nurse = web_as("nurse", "A")
    nurse_page = Page(nurse.text(url(p)))
    assert "pyroht" in nurse_page.text(f"decision-{decision.id}")
    assert record not in [f["action"] for f in nurse_page.post_forms()]
    assert nurse.post(record, data={"regimen": "pyroht"}).status_code == 403

    refused = investigator.post(record, data={"regimen": "everoht", "reason": ""})
    assert refused.status_code == 422
    assert "required: the regimen differs" in refused.get_data(as_text=True)
    db.expire_all()
    assert db.get(Decision, decision.id).status == DecisionStatus.DUE

    resp = investigator.post(
        record, data={"regimen": "everoht", "cycles": "2", "reason": "PAM result revised"}
    )
    assert resp.status_code == 303
    assert resp.headers["Location"].endswith(f"#decision-{decision.id}")
    db.expire_all()
    done = db.get(Decision, decision.id)
    assert (done.status, done.chosen_regimen, done.chosen_cycles) == (
        DecisionStatus.DECIDED,
        "everoht",
        2,
    )
    (row,) = audit_rows(db, "decision.record", decision.id)
    assert row.reason == "PAM result revised" and row.after["follows_recommendation"] is False
    after = Page(investigator.text(url(p)))
    assert "Chosen everoht ×2 differs from the rule" in after.text(f"decision-{decision.id}")
    assert record not in [f["action"] for f in after.post_forms()]
    assert "Decision recorded" in after.text("audit")


# --- the vendored chart library, and no outside URL ----------------------------------------------


def test_chart_library_is_served_from_static_and_the_page_loads_nothing_from_elsewhere(
    world, web_as, client
):
    lib = client.get("/static/vendor/chartjs/chart.umd.min.js")
    assert lib.status_code == 200
    body = lib.get_data()
    assert b"Chart.js v4.6.1" in body[:200]
    readme = (STATIC / "vendor" / "README.md").read_text()
    assert hashlib.sha256(body).hexdigest() in readme
    assert client.get("/static/participant.js").status_code == 200
    assert client.get("/static/participant.css").status_code == 200

    resp = web_as("nurse", "A").get(url(world.participants["A1"]))
    html = resp.get_data(as_text=True)
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert "http://" not in html and "https://" not in html
    page = Page(html)
    assert all(u.startswith(("/", "#")) for u in page.urls), page.urls
    # Scripts are files from /static, or the JSON data block (the CSP allows nothing inline).
    for script in page.scripts:
        if script.get("type") == "application/json":
            continue
        assert script["src"].startswith("/static/") and not script["text"].strip()
    assert "/static/vendor/chartjs/chart.umd.min.js" in [s.get("src") for s in page.scripts]
    assert not any(name.startswith("on") for name in page.attr_names)
    assert "style" not in page.attr_names


# --- a long schedule -----------------------------------------------------------------------------


def test_a_long_schedule_folds_and_the_page_queries_do_not_grow_with_it(world, web_as, db):
    study = factories.make_study(db, "STOP-HER2", "stop-her2")
    long = factories.make_participant(
        db, world.staff[("coordinator", "A")], world.sites["A"], study, "SH-001"
    )
    db.commit()
    count = db.exec(select(sa.func.count()).where(ScheduleEvent.participant_id == long.id)).one()
    assert count > 150
    web = web_as("nurse", "A")
    statements: list[str] = []

    def counted(*args: Any) -> None:
        statements.append(args[2])

    def queries(path: str) -> tuple[int, str]:
        statements.clear()
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", counted)
        try:
            html = web.text(path)
        finally:
            sa.event.remove(sa.engine.Engine, "before_cursor_execute", counted)
        return len(statements), html

    short_n, _ = queries(url(world.participants["A1"]))
    long_n, html = queries(url(long))
    # 35 events or 173: the same handful of queries (no query per event).
    assert short_n > 5 and long_n <= short_n + 2, (short_n, long_n)
    assert long_n < 40
    page = Page(html)
    assert "Next 10 upcoming" in page.text("timeline")
    assert "All future events (" in page.text("timeline")
    assert sum(1 for i in page.ids if re.fullmatch(r"event-\d+", i)) == count


def test_a_participant_with_nothing_yet_gets_a_page_of_empty_states(world, web_as, db):
    screening = factories.make_participant(
        db,
        world.staff[("coordinator", "A")],
        world.sites["A"],
        world.study,
        "A-009",
        anchor_date=None,
        status=ParticipantStatus.SCREENING,
    )
    db.commit()
    page = Page(web_as("investigator", "A").text(url(screening)))
    assert "Anchor date —" in page.text("participant-facts")
    assert "— in window (0 of 0 due)" in page.text("adherence-summary")
    assert "No planned event" in page.text("timeline")
    assert "No ctDNA or imaging result yet." in page.text("ctdna")
    assert "No questionnaire answered yet." in page.text("qol")
    assert "No message yet." in page.text("messages")
    assert "No alert for this participant." in page.text("alerts")
    assert "Participant enrolled" in page.text("audit")
    assert page.data()["results"] == {"ctdna": [], "imaging": [], "anchor_date": None}
