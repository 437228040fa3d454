"""The entry gate's pages in a real browser at 390x844 and 1280x800 (issue 17): a coordinator
enrols a HEROES participant in screening after a preview that shows the gate and both paths;
the baseline comes back negative; the participant page shows the facts and takes the stop date,
after which monitoring is planned; an investigator sees the override form. Nothing scrolls
sideways. Screenshots in test-artifacts/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import select

from server.db import get_db
from server.participants.models import Participant
from server.results import service as results
from server.results.models import ResultKind
from server.schedules.models import ScheduleEvent
from tests.browser.harness import ARTIFACTS, DESKTOP, PHONE, log_in, new_page

SIZES = {"phone": PHONE, "desktop": DESKTOP}


def _page(browser: Any, size: str) -> Page:
    return new_page(browser, SIZES[size])


def _log_in(page: Page, base: str, email: str) -> None:
    log_in(page, base, email)


def _fits(page: Page, size: str) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]


@pytest.mark.parametrize("size", list(SIZES))
def test_a_participant_goes_through_the_entry_gate_in_the_browser(served, browser, size):
    app, base, _ids = served
    code = f"G-{len(size)}0"
    today = datetime.now(UTC).date()
    planned = today + timedelta(days=21)
    page = _page(browser, size)
    _log_in(page, base, "coordinator.a@example.test")
    page.goto(f"{base}/participants/new")
    expect(page.locator("#status")).to_have_value("screening")
    gate = page.locator("#gate-HEROES")
    expect(gate).to_be_visible()
    expect(gate).to_contain_text("Baseline Signatera ctDNA decides the path")
    page.get_by_label("Study code").fill(code)
    page.get_by_label("Anchor date").fill(planned.isoformat())
    _fits(page, size)
    page.get_by_role("button", name="Preview timeline").click()
    page.wait_for_load_state()
    paths = page.locator("#gate-paths li")
    expect(paths).to_have_count(3)
    expect(page.locator('#gate-paths li[data-outcome="pass"]')).to_contain_text("34 events")
    expect(page.locator('#gate-paths li[data-outcome="fail"]')).to_contain_text("maintenance")
    expect(page.locator("#timeline tbody tr")).to_have_count(1)
    _fits(page, size)
    page.screenshot(path=str(ARTIFACTS / f"gate-enroll-preview-{size}.png"), full_page=True)
    page.get_by_role("button", name="Enroll").click()
    page.wait_for_load_state()
    expect(page.locator("h1")).to_contain_text(code)
    section = page.locator("#entry-gate")
    expect(section).to_contain_text("Waiting for:")
    _fits(page, size)

    # The lab's negative baseline arrives.
    with app.app_context(), get_db(app).job_session() as s:
        results.ingest(
            session=s,
            kind=ResultKind.CTDNA,
            source="natera",
            accession_id=f"BASE-{code}",
            study_code=code,
            study_key="HEROES",
            fields={"collected_at": datetime.now(UTC) - timedelta(hours=3), "call": "negative"},
            now=datetime.now(UTC),
            actor="lab:natera",
        )
    page.reload()
    expect(page.locator('#gate-facts tr[data-fact="baseline_ctdna"]')).to_contain_text("negative")
    expect(page.locator("#confirm-stop-date")).to_be_visible()
    _fits(page, size)
    page.screenshot(path=str(ARTIFACTS / f"gate-participant-waiting-{size}.png"), full_page=True)
    page.locator("#stop-day").fill(planned.isoformat())
    page.get_by_role("button", name="Confirm (the schedule counts from it)").click()
    page.wait_for_load_state()
    expect(page.locator(".flash, .notice").first).to_be_visible()
    expect(page.locator("#entry-gate")).to_contain_text("Off treatment, monitored")
    _fits(page, size)
    page.screenshot(path=str(ARTIFACTS / f"gate-participant-passed-{size}.png"), full_page=True)
    page.context.close()
    with app.app_context(), get_db(app).job_session() as s:
        p = s.exec(select(Participant).where(Participant.study_code == code)).one()
        assert p.status.value == "off_treatment_monitoring" and p.anchor_date == planned
        n = len(s.exec(select(ScheduleEvent).where(ScheduleEvent.participant_id == p.id)).all())
        assert n == 35


@pytest.mark.parametrize("size", list(SIZES))
def test_the_investigator_sees_the_override_form(served, browser, size):
    _app, base, _ids = served
    code = f"G-{len(size)}1"
    page = _page(browser, size)
    _log_in(page, base, "coordinator.a@example.test")
    page.goto(f"{base}/participants/new")
    page.get_by_label("Study code").fill(code)
    page.get_by_label("Anchor date").fill(
        (datetime.now(UTC).date() + timedelta(days=21)).isoformat()
    )
    page.get_by_role("button", name="Preview timeline").click()
    page.wait_for_load_state()
    page.get_by_role("button", name="Enroll").click()
    page.wait_for_load_state()
    url = page.url
    page.context.close()
    page = _page(browser, size)
    _log_in(page, base, "investigator.a@example.test")
    page.goto(url)
    page.get_by_text("Override the entry gate (investigator)").click()
    form = page.locator("#gate-override-form")
    expect(form).to_be_visible()
    _fits(page, size)
    page.screenshot(path=str(ARTIFACTS / f"gate-override-{size}.png"), full_page=True)
    form.get_by_label("Decision").select_option("fail")
    form.get_by_label("Reason").fill("new lesion on the baseline MRI")
    form.get_by_role("button", name="Override").click()
    page.wait_for_load_state()
    expect(page.locator("#entry-gate")).to_contain_text("Continues maintenance")
    _fits(page, size)
    page.context.close()
