"""The participants list (filters, search, adherence under N %, pagination, site scoping, masked
phones) and the enrollment form with its dry-run timeline (preview saves nothing; enroll only
what was previewed; field errors; who may enroll)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import time_machine
from sqlmodel import Session, col, func, select

from notifications.models import MessageCategory, OutboxMessage
from server.adherence.rules import percentage
from server.alerts import service as alerts
from server.alerts.models import AlertKind
from server.audit import AuditEvent
from server.auth.models import Role
from server.participants.models import Participant, ParticipantStatus
from server.protocols import rules as engine
from server.protocols.service import find_protocol
from server.schedules import service as schedules
from server.schedules.models import ScheduleEvent
from tests import clock, factories
from tests.conftest import Web

LIST = "/participants"
NEW = "/participants/new"
ROW = re.compile(r'<tr data-participant-id="(\d+)">(.*?)</tr>', re.S)


def frozen(iso: str) -> Any:
    return time_machine.travel(datetime.fromisoformat(iso).replace(tzinfo=UTC), tick=False)


def listed(html: str) -> list[str]:
    """The study codes in the participants table, in order."""
    return [re.search(r">([^<]+)</a>", body).group(1) for _, body in ROW.findall(html)]  # type: ignore[union-attr]


def row_of(html: str, code: str) -> str:
    for _, body in ROW.findall(html):
        if f">{code}</a>" in body:
            return body  # type: ignore[no-any-return]
    raise AssertionError(f"{code} not listed")


def count(db: Session, model: Any) -> int:
    db.expire_all()
    return int(db.exec(select(func.count()).select_from(model)).one())


# --- the list ------------------------------------------------------------------------------------


def test_the_list_shows_my_sites_participants_with_their_columns(web_as, world, db):
    a1 = world.participants["A1"]
    later = factories.make_participant(
        db,
        world.staff[("coordinator", "A")],
        world.sites["A"],
        world.study,
        "A-003",
        anchor_date=clock.today() + timedelta(days=60),
    )
    db.commit()
    html = web_as("coordinator", "A").text(LIST)
    assert listed(html) == ["A-001", "A-002", "A-003"]  # never B-001 (site B)
    assert "B-001" not in html
    row = row_of(html, "A-001")
    assert f'href="/participants/{a1.id}"' in row
    assert '<span class="study">HEROES</span>' in row and '<span class="muted cohort">stop' in row
    # One site: no Site column (it would say the same on every row).
    assert "SITE-A" not in row and '<th scope="col">Site</th>' not in html
    assert "Off treatment, monitored" in row
    assert "2027-01-04" in row
    assert "+33612345678" in row  # a coordinator sees the number
    # Anchored two months from now: nothing due yet, no percentage, no missed event; the next
    # event is the first one planned, with its label and local target date.
    row = row_of(html, later.study_code)
    assert re.search(r'class="num adherence"[^>]*>.*nothing due yet', row)
    first = db.exec(
        select(ScheduleEvent)
        .where(ScheduleEvent.participant_id == later.id)
        .order_by(col(ScheduleEvent.target_at), col(ScheduleEvent.id))
    ).first()
    assert first is not None
    assert f"{first.label}<br>" in row and first.target_date.isoformat() in row
    assert "3 participants." in html


def test_the_other_site_sees_only_its_own(web_as, world):
    html = web_as("nurse", "B").text(LIST)
    assert listed(html) == ["B-001"]
    # Asking for site A by id is refused, the same way as a site that does not exist.
    site_a = world.sites["A"].id
    web = web_as("nurse", "B")
    assert "not one of your sites" in web.text(f"{LIST}?site_id={site_a}", status=400)
    assert "not one of your sites" in web.text(f"{LIST}?site_id=999999", status=400)


def test_a_monitor_sees_masked_phones_and_no_enroll(web_as, world):
    html = web_as("monitor", "A").text(LIST)
    row = row_of(html, "A-001")
    assert "+33612345678" not in html
    assert "+33" in row and "78" in row and "•" in row
    assert 'href="/participants/new"' not in html
    assert "Enroll" not in html


def test_filters_narrow_the_list(app, web_as, world, db):
    coordinator = world.staff[("coordinator", "A")]
    site_a, site_b = world.sites["A"], world.sites["B"]
    other = factories.make_study(db, "STOP-HER2", "stop-her2")
    factories.make_participant(db, coordinator, site_a, world.study, "A-CONT", cohort="continue")
    factories.make_participant(
        db,
        coordinator,
        site_a,
        world.study,
        "A-SCR",
        status=ParticipantStatus.SCREENING,
        cohort=None,
        anchor_date=None,
    )
    factories.make_participant(db, coordinator, site_a, other, "S2-001")
    both = factories.make_user(db, "two@example.test", Role.COORDINATOR, [site_a, site_b])
    db.commit()
    web = web_as("coordinator", "A")
    assert listed(web.text(LIST)) == ["A-001", "A-002", "A-CONT", "A-SCR", "S2-001"]
    assert listed(web.text(f"{LIST}?study=STOP-HER2")) == ["S2-001"]
    assert listed(web.text(f"{LIST}?study=HEROES&cohort=stop")) == ["A-001", "A-002"]
    assert listed(web.text(f"{LIST}?cohort=continue")) == ["A-CONT"]
    assert listed(web.text(f"{LIST}?status=screening")) == ["A-SCR"]
    # The search is a case-insensitive part of the study code.
    assert listed(web.text(f"{LIST}?search=a-00")) == ["A-001", "A-002"]
    assert listed(web.text(f"{LIST}?search=CONT")) == ["A-CONT"]
    assert listed(web.text(f"{LIST}?search=%25")) == []  # a LIKE wildcard is a plain character
    html = web.text(f"{LIST}?search=nobody")
    assert listed(html) == [] and "No participant matches these filters" in html
    # The filters are kept in the form (a filtered view is a shareable URL).
    html = web.text(f"{LIST}?status=screening&search=scr")
    assert 'value="screening" selected' in html and 'value="scr"' in html

    # A user of two sites picks one.
    two = Web(app.test_client())
    assert two.login(both.email).status_code == 302
    assert listed(two.text(LIST)) == ["A-001", "A-002", "A-CONT", "A-SCR", "B-001", "S2-001"]
    html = two.text(f"{LIST}?site_id={site_b.id}")
    assert listed(html) == ["B-001"]
    assert '<td class="nowrap site" data-label="Site">SITE-B</td>' in row_of(html, "B-001")
    assert listed(two.text(f"{LIST}?site_id={site_a.id}&status=screening")) == ["A-SCR"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=cured", "status"),
        ("adherence_below=150", "adherence_below"),
        ("adherence_below=-1", "adherence_below"),
        ("adherence_below=half", "adherence_below"),
        ("page=abc", "page"),
        ("page=0", "page"),
        ("study=NOPE", "study"),
        ("cohort=nope", "cohort"),
        ("site_id=abc", "site_id"),
        ("search=" + "x" * 33, "search"),
    ],
)
def test_bad_filters_are_a_clear_400_page(web_as, world, query, field):
    html = web_as("coordinator", "A").text(f"{LIST}?{query}", status=400)
    assert f"<strong>{field}</strong>" in html
    assert "<table" not in html


def test_pages_of_fifty_keep_the_filters(web_as, world, db):
    coordinator = world.staff[("coordinator", "A")]
    for n in range(55):
        factories.make_participant(
            db,
            coordinator,
            world.sites["A"],
            world.study,
            f"P-{n:03d}",
            status=ParticipantStatus.SCREENING,
            anchor_date=None,
        )
    db.commit()
    web = web_as("coordinator", "A")
    first = web.text(f"{LIST}?search=p-")
    assert listed(first) == [f"P-{n:03d}" for n in range(50)]
    assert "55 participants match these filters · page 1 of 2" in first
    assert 'href="/participants?search=p-&amp;page=2"' in first
    second = web.text(f"{LIST}?search=p-&page=2")
    assert listed(second) == [f"P-{n:03d}" for n in range(50, 55)]
    assert 'href="/participants?search=p-&amp;page=1"' in second
    # Without the filter, the two world participants join the list (57 in all).
    assert "57 participants · page 1 of 2" in web.text(LIST)
    past = web.text(f"{LIST}?search=p-&page=9")
    assert listed(past) == [] and "past the last page" in past


def _complete(db: Session, participant: Participant, events: list[ScheduleEvent]) -> None:
    for event in events:
        schedules.complete_event(
            session=db,
            participant=participant,
            event=event,
            completed_on=event.target_date,
            now=datetime(2027, 5, 1, 12, tzinfo=UTC),
            actor="test",
        )


def test_adherence_under_n_percent_is_counted_in_sql_with_missed_events(web_as, api_as, world, db):
    a1, a2 = world.participants["A1"], world.participants["A2"]
    coordinator = world.staff[("coordinator", "A")]
    # Anchored after "now" (her baseline draw's window is still open): nothing of hers is due
    # yet, so no %, and never "under".
    factories.make_participant(
        db, coordinator, world.sites["A"], world.study, "A-NEW", anchor_date=date(2027, 5, 20)
    )
    now = datetime(2027, 5, 1, 12, tzinfo=UTC)
    due = {
        p.id: list(
            db.exec(
                select(ScheduleEvent)
                .where(ScheduleEvent.participant_id == p.id, ScheduleEvent.window_close_at <= now)
                .order_by(col(ScheduleEvent.target_at))
            )
        )
        for p in (a1, a2)
    }
    assert len(due[a1.id]) >= 3
    # A1 does every due event but one, in its window; A2 does none (all missed).
    with frozen("2027-05-01T12:00:00"):
        _complete(db, a1, due[a1.id][1:])
        db.commit()
        web = web_as("coordinator", "A")
        n = len(due[a1.id])
        pct = percentage(n - 1, n)
        assert pct is not None
        html = web.text(LIST)
        assert f"{pct:.1f} %" in row_of(html, "A-001")
        assert '<span class="badge missed">1 missed</span>' in row_of(html, "A-001")
        assert "0.0 %" in row_of(html, "A-002")
        assert f'class="badge missed">{len(due[a2.id])} missed<' in row_of(html, "A-002")
        assert "nothing due yet" in row_of(html, "A-NEW")

        above = int(pct) + 1  # A1 is under this, just
        assert listed(web.text(f"{LIST}?adherence_below={above}")) == ["A-001", "A-002"]
        assert listed(web.text(f"{LIST}?adherence_below={int(pct)}")) == ["A-002"]
        assert listed(web.text(f"{LIST}?adherence_below=100")) == ["A-001", "A-002"]
        html = web.text(f"{LIST}?adherence_below=1")
        assert listed(html) == ["A-002"] and "1 participant matches" in html
        assert listed(web.text(f"{LIST}?adherence_below=0")) == []
        # Combined with another filter, in the same query.
        assert listed(web.text(f"{LIST}?adherence_below=100&search=001")) == ["A-001"]
        # The JSON API offers the same filter, answering the same participants.
        api = api_as("coordinator", "A")
        body = api.get(f"/api/v1/participants?adherence_below={int(pct)}").get_json()
        assert [p["study_code"] for p in body["items"]] == ["A-002"] and body["total"] == 1
        bad = api.get("/api/v1/participants?adherence_below=101")
        assert bad.status_code == 422 and "adherence_below" in bad.get_json()["error"]["fields"]


def test_open_alerts_are_counted(web_as, world, db):
    a1 = world.participants["A1"]
    for n in range(2):
        alerts.open_alert(
            session=db,
            kind=AlertKind.CTDNA_POSITIVE,
            trigger_key=f"test:{n}",
            participant=a1,
            site_id=a1.site_id,
            summary="test",
            now=datetime.now(UTC),
        )
    db.commit()
    html = web_as("nurse", "A").text(LIST)
    assert re.search(
        r'class="num alerts" data-label="Alerts"><span class="badge critical"[^>]*>2<',
        row_of(html, "A-001"),
    )
    assert 'class="num alerts" data-label="Alerts">0<' in row_of(html, "A-002")


def test_the_json_api_list_is_unchanged(api_as, world):
    body = api_as("coordinator", "A").get("/api/v1/participants?search=A-00").get_json()
    assert [p["study_code"] for p in body["items"]] == ["A-001", "A-002"]


# --- enrolment -----------------------------------------------------------------------------------


def form(world: Any, **kw: Any) -> dict[str, Any]:
    values = {
        "study": "HEROES",
        "site_id": str(world.sites["A"].id),
        "study_code": "A-100",
        "cohort": "HEROES:stop",
        "anchor_date": "2027-02-01",
        "status": "off_treatment_monitoring",
        "timezone": "",
        "locale": "fr",
        "phone": "06 12 34 56 00",
        "has_sms_consent": "on",
        # Past screening, HEROES's entry gate was passed: its fact attested, with its date.
        "gate.baseline_ctdna.value": "negative",
        "gate.baseline_ctdna.observed_on": "2026-11-20",
    }
    values.update(kw)
    return {k: v for k, v in values.items() if v is not None}


DIGEST = re.compile(r'name="digest" value="([0-9a-f]+)"')


def timeline_rows(html: str) -> int:
    tables = re.findall(r'<table id="timeline(?:-rest)?".*?<tbody>(.*?)</tbody>', html, re.S)
    return sum(t.count("<tr>") for t in tables)


def counts(db: Session) -> tuple[int, int, int, int]:
    return (
        count(db, Participant),
        count(db, ScheduleEvent),
        count(db, AuditEvent),
        count(db, OutboxMessage),
    )


def test_the_form_is_for_roles_that_enroll(web_as, world):
    html = web_as("coordinator", "A").text(NEW)
    for hook in ('id="study"', 'id="site_id"', 'id="study_code"', 'id="cohort"'):
        assert hook in html
    assert ">Preview timeline</button>" in html and 'id="timeline"' not in html
    assert '<optgroup label="HEROES"' in html and 'value="HEROES:stop"' in html
    assert 'href="/participants/new"' in html  # the nav link
    web_as("investigator", "A").text(NEW)
    web_as("admin", "A").text(NEW)
    for role in ("nurse", "monitor"):
        web = web_as(role, "A")
        assert 'href="/participants/new"' not in web.text(LIST)
        web.text(NEW, status=403)


@pytest.mark.parametrize("role", ["nurse", "monitor"])
def test_a_post_from_a_role_that_may_not_enroll_is_refused(web_as, world, db, role):
    web = web_as(role, "A")
    before = counts(db)
    for action in ("preview", "enroll"):
        resp = web.post(NEW, data={**form(world), "action": action, "digest": "0" * 64})
        assert resp.status_code == 403
    assert counts(db) == before


def test_preview_saves_nothing_and_shows_the_timeline(web_as, world, db):
    web = web_as("coordinator", "A")
    before = counts(db)
    resp = web.post(NEW, data={**form(world), "action": "preview"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200, html
    assert counts(db) == before
    expected = engine.expand_schedule(
        find_protocol("heroes"), cohort="stop", anchor_date=date(2027, 2, 1), tz="Europe/Paris"
    )
    assert 0 < len(expected) <= 40
    assert f'data-count="{len(expected)}"' in html
    assert f"{len(expected)} events</strong> from {expected[0].target_date}" in html
    assert timeline_rows(html) == len(expected) and 'id="timeline-more"' not in html
    e = expected[1]
    assert f"<td>{e.label}" in html and f"{e.window_open_date} → {e.window_close_date}" in html
    # The values are kept, normalised as they will be saved, and the Enroll button is there.
    assert 'value="+33612345600"' in html
    assert 'value="Europe/Paris"' in html  # the site's zone, filled in
    assert 'value="A-100"' in html and 'value="HEROES:stop" selected' in html
    assert (
        'value="fr" selected' in html and 'name="has_sms_consent" type="checkbox" checked' in html
    )
    assert DIGEST.search(html)
    assert ">Enroll</button>" in html


def test_a_long_timeline_shows_forty_rows_and_the_rest_behind_show_all(web_as, world, db):
    factories.make_study(db, "STOP-HER2", "stop-her2")
    db.commit()
    web = web_as("coordinator", "A")
    before = counts(db)
    data = form(world, study="STOP-HER2", cohort="STOP-HER2:stop", timezone="America/New_York")
    # Past screening: STOP-HER2's entry gate (scans within 30 days) attested (issue 17).
    data["gate.baseline_scans_recent.value"] = "within"
    data["gate.baseline_scans_recent.observed_on"] = "2026-11-20"
    html = web.post(NEW, data={**data, "action": "preview"}).get_data(as_text=True)
    assert counts(db) == before
    expected = engine.expand_schedule(
        find_protocol("stop-her2"),
        cohort="stop",
        anchor_date=date(2027, 2, 1),
        tz="America/New_York",
    )
    assert len(expected) > 40
    shown = re.search(r'<table id="timeline".*?</table>', html, re.S).group(0)  # type: ignore[union-attr]
    assert shown.count("<tr>") == 40 + 1  # the header row and the first 40
    assert '<td class="num">40</td>' in shown and '<td class="num">41</td>' not in shown
    rest = re.search(r'<details id="timeline-more">.*?</details>', html, re.S).group(0)  # type: ignore[union-attr]
    assert f'<td class="num">41</td>\n    <td>{expected[40].label}' in rest
    assert f'<td class="num">{len(expected)}</td>' in rest
    assert timeline_rows(html) == len(expected)
    assert f"Show all {len(expected)} events ({len(expected) - 40} more)" in html
    assert 'value="America/New_York"' in html


def test_enroll_after_preview_creates_the_participant_schedule_audit_and_welcome(web_as, world, db):
    web = web_as("coordinator", "A")
    preview = web.post(NEW, data={**form(world), "action": "preview"}).get_data(as_text=True)
    digest = DIGEST.search(preview).group(1)  # type: ignore[union-attr]
    planned = timeline_rows(preview)
    resp = web.post(NEW, data={**form(world), "action": "enroll", "digest": digest})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    db.expire_all()
    p = db.exec(select(Participant).where(Participant.study_code == "A-100")).one()
    assert resp.headers["Location"].endswith(f"/participants/{p.id}")
    assert (p.site_id, p.cohort, p.anchor_date) == (world.sites["A"].id, "stop", date(2027, 2, 1))
    assert (p.timezone, p.locale.value, p.phone_e164) == ("Europe/Paris", "fr", "+33612345600")
    assert p.status == ParticipantStatus.OFF_TREATMENT_MONITORING and p.has_sms_consent
    events = db.exec(select(ScheduleEvent).where(ScheduleEvent.participant_id == p.id)).all()
    assert len(events) == planned
    audit = db.exec(
        select(AuditEvent).where(
            AuditEvent.entity == "participant", AuditEvent.entity_id == str(p.id)
        )
    ).all()
    actions = {a.action: a for a in audit}
    assert actions["participant.create"].actor_user_id == world.staff[("coordinator", "A")].id
    assert "schedule.planned" in actions
    welcome = db.exec(
        select(OutboxMessage).where(
            OutboxMessage.participant_id == p.id,
            OutboxMessage.category == MessageCategory.WELCOME,
        )
    ).all()
    assert len(welcome) == 1
    assert f"A-100 enrolled: {planned} events planned." in web.text(f"/participants/{p.id}")


def test_enroll_without_sms_consent_queues_no_welcome(web_as, world, db):
    web = web_as("investigator", "A")
    data = form(world, phone="", has_sms_consent=None, study_code="A-101")
    digest = DIGEST.search(web.post(NEW, data={**data, "action": "preview"}).get_data(as_text=True))
    resp = web.post(NEW, data={**data, "action": "enroll", "digest": digest.group(1)})  # type: ignore[union-attr]
    assert resp.status_code == 302
    p = db.exec(select(Participant).where(Participant.study_code == "A-101")).one()
    assert p.phone_e164 is None and not p.has_sms_consent
    assert not db.exec(select(OutboxMessage).where(OutboxMessage.participant_id == p.id)).all()


def test_changed_values_after_the_preview_are_previewed_again_not_saved(web_as, world, db):
    web = web_as("coordinator", "A")
    preview = web.post(NEW, data={**form(world), "action": "preview"}).get_data(as_text=True)
    digest = DIGEST.search(preview).group(1)  # type: ignore[union-attr]
    before = counts(db)
    for changed in (
        {"anchor_date": "2027-03-01"},
        {"study_code": "A-200"},
        {"phone": "+33612345699"},
        {"has_sms_consent": None},
        {"locale": "en"},
        {"timezone": "Europe/London"},
    ):
        resp = web.post(NEW, data={**form(world, **changed), "action": "enroll", "digest": digest})
        html = resp.get_data(as_text=True)
        assert resp.status_code == 409, (changed, html)
        assert "check the timeline again" in html and 'id="timeline"' in html
        assert counts(db) == before
    # No digest at all (straight to Enroll) is the same.
    resp = web.post(NEW, data={**form(world), "action": "enroll"})
    assert resp.status_code == 409 and counts(db) == before
    # The new preview's digest enrolls the new values.
    new = form(world, anchor_date="2027-03-01")
    html = web.post(NEW, data={**new, "action": "enroll", "digest": digest}).get_data(as_text=True)
    fresh = DIGEST.search(html).group(1)  # type: ignore[union-attr]
    assert fresh != digest
    assert web.post(NEW, data={**new, "action": "enroll", "digest": fresh}).status_code == 302
    p = db.exec(select(Participant).where(Participant.study_code == "A-100")).one()
    assert p.anchor_date == date(2027, 3, 1)


def test_a_digest_is_bound_to_the_user_who_previewed(web_as, world, db):
    preview = web_as("coordinator", "A").post(NEW, data={**form(world), "action": "preview"})
    digest = DIGEST.search(preview.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    resp = web_as("investigator", "A").post(
        NEW, data={**form(world), "action": "enroll", "digest": digest}
    )
    assert resp.status_code == 409


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone", "not a known IANA time zone"),
        ({"phone": "12345"}, "phone", "not a valid phone number"),
        ({"phone": "12"}, "phone", "Length must be between 3 and 32"),
        ({"phone": "", "has_sms_consent": "on"}, "phone", "SMS consent needs a phone number"),
        ({"study_code": "A-001"}, "study_code", "already used in this study"),
        ({"study_code": "Jane Doe"}, "study_code", "letters, digits"),
        ({"study_code": ""}, "study_code", "required"),
        ({"anchor_date": "2027-02-30"}, "anchor_date", "Not a valid date"),
        ({"anchor_date": ""}, "anchor_date", "required"),
        ({"anchor_date": "9999-12-30"}, "anchor_date", "too far"),
        ({"cohort": "NCT07239271:adaptive"}, "cohort", "not of the chosen study"),
        ({"cohort": "adaptive"}, "cohort", "not a cohort of HEROES"),
        ({"cohort": ""}, "cohort", "required"),
        ({"study": "NOPE"}, "study", "no such study"),
        ({"status": "withdrawn"}, "status", "choose one of"),
        ({"locale": "de"}, "locale", "Must be one of"),
        ({"site_id": "abc"}, "site_id", "Not a valid integer"),
    ],
)
def test_a_bad_form_comes_back_with_the_message_at_the_field(
    web_as, world, db, changes, field, message
):
    web = web_as("coordinator", "A")
    before = counts(db)
    resp = web.post(NEW, data={**form(world, **changes), "action": "preview"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422, html
    error = re.search(rf'<p class="field-error" id="{field}-error">(.*?)</p>', html)
    assert error is not None and message in error.group(1), html
    assert f'id="{field}" ' in html and 'aria-invalid="true"' in html
    assert 'id="timeline"' not in html and not DIGEST.search(html)
    assert counts(db) == before


def test_several_errors_are_shown_at_once_and_the_values_kept(web_as, world, db):
    data = form(world, timezone="Mars/Olympus", phone="12", study_code="A-001", locale="en")
    html = web_as("coordinator", "A").post(NEW, data={**data, "action": "preview"})
    text = html.get_data(as_text=True)
    assert html.status_code == 422
    for name in ("timezone", "phone", "study_code"):
        assert f'id="{name}-error"' in text
    assert 'value="Mars/Olympus"' in text and 'value="12"' in text
    assert 'value="en" selected' in text


def test_another_sites_id_in_the_form_is_refused_and_nothing_saved(web_as, world, db):
    data = form(world, site_id=str(world.sites["B"].id))
    web = web_as("coordinator", "A")
    before = counts(db)
    for action in ("preview", "enroll"):
        resp = web.post(NEW, data={**data, "action": action, "digest": "0" * 64})
        assert resp.status_code == 422
        assert "no such site among your sites" in resp.get_data(as_text=True)
    assert counts(db) == before


def test_an_unknown_action_is_a_400(web_as, world, db):
    resp = web_as("coordinator", "A").post(NEW, data={**form(world), "action": "delete"})
    assert resp.status_code == 400


def test_the_timeline_says_types_in_words_and_warns_of_closed_windows(web_as, world):
    # Anchored ten weeks before "now": the first events' windows have closed.
    with frozen("2027-04-12T10:00:00"):
        web = web_as("coordinator", "A")
        resp = web.post(NEW, data={**form(world, anchor_date="2027-02-01"), "action": "preview"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    # The type in words (case aside: the label table may say "ctDNA draw").
    assert re.search(r'<td class="type">ctdna draw</td>', html, re.IGNORECASE)
    closed = engine.expand_schedule(
        find_protocol("heroes"), cohort="stop", anchor_date=date(2027, 2, 1), tz="Europe/Paris"
    )
    n = sum(1 for e in closed if e.window_close_at <= datetime(2027, 4, 12, 10, tzinfo=UTC))
    assert n >= 1
    assert re.search(
        rf'id="timeline-past">{n} events? ha(s|ve) a window that has already closed', html
    )
    # Anchored in the future: no such warning.
    future = (clock.today() + timedelta(days=60)).isoformat()
    html = web_as("coordinator", "A").post(
        NEW, data={**form(world, anchor_date=future), "action": "preview"}
    )
    assert 'id="timeline-past"' not in html.get_data(as_text=True)
