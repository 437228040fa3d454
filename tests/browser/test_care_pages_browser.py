"""The care-team pages in a real browser (Debian's Chromium driven by Playwright), at desktop and
tablet sizes: a nurse acknowledges an alert from Today and sees it leave the list; a coordinator
enrolls a participant after seeing the planned timeline; a site-A nurse opening a site-B
participant's page gets a 404. Screenshots are kept in test-artifacts/."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import select

from server.alerts import service as alerts
from server.alerts.models import Alert, AlertKind, AlertState
from server.db import get_db
from server.participants.models import Participant
from server.schedules.models import ScheduleEvent
from tests.browser.harness import ARTIFACTS, DESKTOP, log_in, new_page, no_sideways_scroll

VIEWPORTS = {
    "desktop": DESKTOP,
    "tablet": {"width": 768, "height": 1024},
}


def _log_in(page: Page, base: str, email: str) -> None:
    log_in(page, base, email)
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_nurse_acknowledges_an_alert_from_today_and_it_leaves_the_list(served, browser, size):
    app, base, ids = served
    with app.app_context(), get_db(app).job_session() as s:
        participant = s.get(Participant, ids["A1"])
        alert, _ = alerts.open_alert(
            session=s,
            kind=AlertKind.CTDNA_POSITIVE,
            trigger_key=f"browser:{size}",
            participant=participant,
            site_id=ids["site_a"],
            summary="ctDNA turned positive",
            now=datetime.now(UTC),
        )
        alert_id = alert.id
    page = new_page(browser, VIEWPORTS[size])
    _log_in(page, base, "nurse.a@example.test")
    expect(page.locator("h1")).to_contain_text("Today")
    row = page.locator(f'#open-alerts tr[data-alert-id="{alert_id}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("A-001")
    # Wide tables scroll inside their own box; the page itself never scrolls sideways.
    no_sideways_scroll(page, VIEWPORTS[size]["width"])
    page.screenshot(path=str(ARTIFACTS / f"today-open-alert-{size}.png"), full_page=True)

    row.get_by_label("Note").fill("called the participant")
    row.get_by_role("button", name="Acknowledge").click()
    page.wait_for_load_state()
    expect(page.locator(f'#open-alerts tr[data-alert-id="{alert_id}"]')).to_have_count(0)
    expect(page.locator(f'#acknowledged-alerts tr[data-alert-id="{alert_id}"]')).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / f"today-after-acknowledge-{size}.png"), full_page=True)
    page.context.close()
    with app.app_context(), get_db(app).job_session() as s:
        stored = s.get(Alert, alert_id)
        assert stored.state == AlertState.ACKNOWLEDGED
        assert stored.ack_channel == "web"


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_coordinator_enrolls_after_seeing_the_timeline(served, browser, size):
    app, base, _ids = served
    code = f"A-1{len(size)}"
    page = new_page(browser, VIEWPORTS[size])
    _log_in(page, base, "coordinator.a@example.test")
    page.get_by_role("link", name="Enroll").click()
    page.wait_for_load_state()
    page.get_by_label("Study code").fill(code)
    page.get_by_label("Cohort").select_option(label="HEROES: stop")
    page.get_by_label("Anchor date").fill("2027-01-04")
    # Past screening: the entry gate's baseline attested (issue 17; screening is the default).
    page.get_by_label("Status at enrolment").select_option("off_treatment_monitoring")
    page.locator('[id="gate.baseline_ctdna.value-HEROES"]').select_option("negative")
    page.locator('[id="gate.baseline_ctdna.observed_on-HEROES"]').fill("2026-11-20")
    page.get_by_label("Phone").fill("+33612345600")
    page.get_by_role("button", name="Preview timeline").click()
    page.wait_for_load_state()
    timeline = page.locator("#timeline")
    expect(timeline).to_be_visible()
    assert timeline.locator("tbody tr").count() > 5
    # Wide tables scroll inside their own box; the page itself never scrolls sideways.
    no_sideways_scroll(page, VIEWPORTS[size]["width"])
    page.screenshot(path=str(ARTIFACTS / f"enroll-preview-{size}.png"), full_page=True)
    with app.app_context(), get_db(app).job_session() as s:
        # Seeing the timeline saved nothing.
        assert s.exec(select(Participant).where(Participant.study_code == code)).first() is None

    page.get_by_role("button", name="Enroll").click()
    page.wait_for_load_state()
    expect(page.locator("h1")).to_contain_text(code)
    page.screenshot(path=str(ARTIFACTS / f"enrolled-participant-{size}.png"), full_page=True)
    page.context.close()
    with app.app_context(), get_db(app).job_session() as s:
        p = s.exec(select(Participant).where(Participant.study_code == code)).one()
        events = s.exec(select(ScheduleEvent).where(ScheduleEvent.participant_id == p.id)).all()
        assert p.anchor_date.isoformat() == "2027-01-04"
        assert len(events) > 5


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_site_a_nurse_gets_404_for_a_site_b_participant(served, browser, size):
    _app, base, ids = served
    page = new_page(browser, VIEWPORTS[size])
    _log_in(page, base, "nurse.a@example.test")
    own = page.goto(f"{base}/participants/{ids['A1']}")
    assert own is not None and own.status == 200
    other = page.goto(f"{base}/participants/{ids['B1']}")
    assert other is not None and other.status == 404
    expect(page.locator("h1")).to_contain_text("Not found")
    assert "B-001" not in page.content()
    page.screenshot(path=str(ARTIFACTS / f"other-site-404-{size}.png"), full_page=True)
    page.context.close()
