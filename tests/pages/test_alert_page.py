"""The alert page (the link in the alert SMS) answers "what happened, what now": the triggering
result with its value and date, the earlier results and the scans, the protocol's next step and
its source, the site team (tap to call for staff, masked for monitors), the escalation in words,
acknowledge first; never the acknowledgement code. A participant's page shows their open alerts
first; audit rows name staff and actions in words."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from html import unescape
from typing import Any

import time_machine

from server.alerts import service as alerts
from server.alerts.models import Alert, AlertKind
from server.results import service as results
from server.results.models import ResultKind
from tests.pages.test_today import care_team

__all__ = ["care_team"]

T0 = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)  # Tuesday, 10:00 in Paris


def at(moment: datetime) -> Any:
    return time_machine.travel(moment, tick=False)


def ingest(db: Any, kind: ResultKind, accession: str, code: str = "A-001", **fields: Any) -> Any:
    return results.ingest(
        session=db,
        kind=kind,
        source="natera" if kind == ResultKind.CTDNA else "radiology",
        accession_id=accession,
        study_code=code,
        study_key="HEROES",
        now=datetime.now(UTC),
        actor="lab:test",
        fields=fields,
    )


def turned_positive(db: Any) -> int:
    """A-001: negative at baseline and at week 12, a stable scan, then positive at 0.42."""
    ingest(
        db,
        ResultKind.CTDNA,
        "BASE",
        collected_at=datetime(2026, 12, 14, 9, 0, tzinfo=UTC),
        call="negative",
        mtm_per_ml=0.0,
    )
    ingest(
        db,
        ResultKind.IMAGING,
        "SCAN-1",
        performed_on=date(2027, 3, 22),
        modality="ct",
        recist="SD",
    )
    done = ingest(
        db,
        ResultKind.CTDNA,
        "POS",
        collected_at=datetime(2027, 3, 29, 7, 0, tzinfo=UTC),
        call="positive",
        mtm_per_ml=0.42,
    )
    db.commit()
    assert done.alert_id is not None
    return int(done.alert_id)


def section(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    end = html.find("</section>", start)
    return html[start : end if end != -1 else len(html)]


def words(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_the_page_says_what_happened_and_what_now(world, db, web_as, care_team):
    with at(T0):
        alert_id = turned_positive(db)
        html = web_as("nurse", "A").text(f"/alerts/{alert_id}")
    head = words(section(html, "alert-head"))
    assert "Critical" in head and "ctDNA turned positive · A-001" in head
    assert (
        "ctDNA positive, 0.42 MTM/mL (drawn Mon 29 Mar 2027); "
        "before: negative, 0 MTM/mL (drawn Mon 14 Dec 2026)"
    ) in head
    # What happened: the result, every ctDNA result (a chart and a list), the scans.
    happened = section(html, "what-happened")
    assert "0.42 MTM/mL" in words(happened) and "accession POS" in words(happened)
    assert happened.count('<circle class="dot') == 2
    assert 'class="dot positive trigger"' in happened
    ctdna = words(section(html, "what-happened")[happened.index('id="ctdna-results"') :])
    assert ctdna.index("Mon 29 Mar 2027 Positive · 0.42 MTM/mL") < ctdna.index(
        "Mon 14 Dec 2026 Negative · 0 MTM/mL"
    )
    assert "Mon 22 Mar 2027 CT · SD (stable disease)" in words(happened)
    # What now: the protocol's next step, with the trial document it comes from.
    now_ = words(section(html, "what-now"))
    assert "Resume the prior anti-HER2 therapy or begin a new treatment" in now_
    assert 'seed 002: "If at any point during the trial radiological progression' in now_
    assert "From the HEROES protocol, version 4" in now_


def test_acknowledge_is_the_first_thing_and_the_code_is_nowhere(world, db, web_as, care_team):
    with at(T0):
        alert_id = turned_positive(db)
        html = web_as("nurse", "A").text(f"/alerts/{alert_id}")
    code = db.get(Alert, alert_id).ack_code
    assert code not in html
    button = html.index('id="ack-button"')
    assert button < html.index('id="what-now"') < html.index('id="what-happened"')
    assert f'action="/alerts/{alert_id}/acknowledge"' in html


def test_the_team_can_be_called_by_staff_and_monitors_see_masked_numbers(
    world, db, web_as, care_team
):
    with at(T0):
        alert_id = turned_positive(db)
        nurse_view = section(web_as("nurse", "A").text(f"/alerts/{alert_id}"), "team")
        monitor_view = section(web_as("monitor", "A").text(f"/alerts/{alert_id}"), "team")
    nurse = world.staff[("nurse", "A")]
    assert f'href="tel:{nurse.phone_e164}"' in nurse_view
    assert "on call" in nurse_view
    team = words(nurse_view)
    assert team.index("nurse.a · Nurse") < team.index("coordinator.a · Coordinator")
    assert "investigator.a · Investigator" in team
    assert "monitor.a" not in team and "admin.a" not in team
    assert "tel:" not in monitor_view and nurse.phone_e164 not in monitor_view
    assert "•" in monitor_view


def test_the_escalation_in_words_says_who_is_next_and_when(world, db, web_as, care_team):
    with at(T0):
        alert_id = turned_positive(db)
        escalation = words(section(web_as("nurse", "A").text(f"/alerts/{alert_id}"), "escalation"))
    assert "Opened (Critical: act now: paged day and night" in escalation
    assert "Tier 1: SMS to nurse.a" in escalation
    assert (
        "Tue 30 Mar 10:15 (in 15 min) If nobody acknowledges by then — Tier 2: every nurse and "
        "coordinator: coordinator.a, nurse.a"
    ) in escalation
    assert (
        "Tue 30 Mar 10:30 (in 30 min) Tier 3 (SMS and a phone call): the investigator: "
        "investigator.a"
    ) in escalation
    assert "Tier 3 again" not in escalation
    # The default critical route has no repeats: the site's fail-safe 45 minutes in.
    assert escalation.endswith("Tue 30 Mar 10:45 (in 45 min) Fail-safe: investigator.a")


def test_a_routine_task_needs_no_reply_and_never_escalates(world, db, web_as, care_team):
    a1 = world.participants["A1"]
    with at(T0):
        alert, _ = alerts.open_alert(
            session=db,
            kind=AlertKind.RESULT_OVERDUE,
            trigger_key="test:routine",
            participant=a1,
            site_id=a1.site_id,
            summary="no result",
            now=datetime.now(UTC),
        )
        db.commit()
        web = web_as("coordinator", "A")
        html = web.text(f"/alerts/{alert.id}")
        today = web.text("/")
    # On Today it is a task for the morning SMS, not a tier that escalates.
    row = today[today.index(f'data-alert-id="{alert.id}"') :]
    row = words(row[: row.index("</tr>")])
    assert "Result overdue Routine" in row and "task morning SMS, no reply needed" in row
    assert "tier 1" not in row
    head = words(section(html, "alert-head"))
    assert "Routine" in head and "no reply is needed" in head
    escalation = words(section(html, "escalation"))
    assert "Tier 1: SMS to coordinator.a, to go out Wed 31 Mar 08:00" in escalation
    assert "never escalates" in escalation and "Tier 2" not in escalation
    assert "Ask the lab for the report" in words(section(html, "what-now"))


def test_the_participant_page_shows_open_alerts_first(world, db, web_as, care_team):
    a1 = world.participants["A1"]
    with at(T0):
        alert_id = turned_positive(db)
        web = web_as("nurse", "A")
        html = web.text(f"/participants/{a1.id}")
        banner = section(html, "open-alerts")
        title = html.index('id="participant-title"')
        assert title < html.index('id="open-alerts"') < html.index('id="participant-facts"')
        assert f'href="/alerts/{alert_id}"' in banner
        assert "Critical" in words(banner) and "ctDNA turned positive" in words(banner)
        web.post(f"/alerts/{alert_id}/acknowledge", data={"next": "/"})
        acknowledged = words(section(web.text(f"/participants/{a1.id}"), "open-alerts"))
        assert "Acknowledged" in acknowledged and "acknowledged by nurse.a" in acknowledged
        web.post(f"/alerts/{alert_id}/resolve", data={"note": "resumed", "next": "/"})
        after = web.text(f"/participants/{a1.id}")
    assert 'id="open-alerts"' not in after
    # The audit history names people and actions in words, never "staff:<id>".
    audit = words(section(after, "audit"))
    nurse = world.staff[("nurse", "A")]
    assert "Alert acknowledged" in audit and "Alert resolved" in audit and "nurse.a" in audit
    assert f"staff:{nurse.id}" not in after and "alert.acknowledge" not in audit
    assert "Stepdown (protocol rules)" in audit
