"""The alert page a nurse opens from the SMS, and the participant's page, in a real browser
(Debian's Chromium driven by Playwright) on a phone (390x844) and a laptop (1280x800): what
happened and the Acknowledge button are on the first screen, one tap acknowledges; the team can
be called; the participant's page shows the open alert first; no sideways scroll. Screenshots
are kept in test-artifacts/ (alert-*.png, participant-open-alert-*.png)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine
from playwright.sync_api import Page, expect
from sqlmodel import select

from server.alerts.models import Alert, AlertKind, AlertState
from server.auth.models import Role, SiteMembership
from server.db import get_db
from server.results import service as results
from server.results.models import ResultKind
from tests import factories
from tests.browser.harness import (
    ARTIFACTS,
    DESKTOP,
    PHONE,
    log_in,
    new_page,
    no_sideways_scroll,
    serving,
)

VIEWPORTS = {"phone": PHONE, "desktop": DESKTOP}


def _ctdna(session: Any, accession: str, call: str, mtm: float, collected: datetime) -> Any:
    return results.ingest(
        session=session,
        kind=ResultKind.CTDNA,
        source="natera",
        accession_id=accession,
        study_code="A-001",
        study_key="HEROES",
        now=datetime.now(UTC),
        actor="lab:test",
        fields={"collected_at": collected, "call": call, "mtm_per_ml": mtm},
    )


# Tuesday 30 March 2027, 10:00 in Paris: A-001 (anchor 4 January) is being monitored.
T0 = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)


@pytest.fixture
def served(fresh_app: Any) -> Iterator[tuple[Any, str, dict[str, int]]]:
    """Two sites' world with A-001's ctDNA turned positive (an open critical alert), served on a
    real port (the browser is another client), the clock held at T0 for server and test."""
    with time_machine.travel(T0, tick=False):
        with fresh_app.app_context(), get_db(fresh_app).job_session() as s:
            world = factories.build_world(s)
            for (role, site), user in world.staff.items():
                if site == "A" and role in ("nurse", "coordinator", "investigator"):
                    user.phone_e164 = f"+3361000000{list(Role).index(Role(role))}"
                    user.is_phone_verified = True
                    s.add(user)
            nurse = world.staff[("nurse", "A")]
            membership = s.exec(
                select(SiteMembership).where(SiteMembership.user_id == nurse.id)
            ).one()
            membership.is_on_call = True
            s.flush()
            _ctdna(s, "BASE", "negative", 0.0, datetime(2026, 12, 21, 8, 0, tzinfo=UTC))
            _ctdna(s, "WEEK-8", "negative", 0.0, datetime(2027, 3, 1, 8, 0, tzinfo=UTC))
            done = _ctdna(s, "POS", "positive", 0.42, datetime(2027, 3, 29, 7, 0, tzinfo=UTC))
            ids = {"alert": int(done.alert_id), "A1": int(world.participants["A1"].id)}
        with serving(fresh_app) as base:
            yield fresh_app, base, ids


def _logged_in(browser: Any, base: str, size: str, email: str) -> Page:
    page = new_page(browser, VIEWPORTS[size])
    log_in(page, base, email)
    return page


def _on_first_screen(page: Page, selector: str, size: str) -> None:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    assert box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORTS[size]["height"], (selector, box)


def _no_sideways_scroll(page: Page, size: str) -> None:
    no_sideways_scroll(page, VIEWPORTS[size]["width"])


def _routine_task(app: Any, participant_id: int, kind: Any, key: str, summary: str) -> int:
    """A routine alert of `kind` opened for the participant at T0; its id."""
    from server.alerts import service as alerts
    from server.participants.models import Participant

    with app.app_context(), get_db(app).job_session() as s:
        participant = s.get(Participant, participant_id)
        task, _ = alerts.open_alert(
            session=s,
            kind=kind,
            trigger_key=key,
            participant=participant,
            site_id=participant.site_id,
            summary=summary,
            now=T0,
        )
        return int(task.id)


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_a_nurse_opens_the_sms_link_sees_what_happened_and_acknowledges_in_one_tap(
    served, browser, size
):
    app, base, ids = served
    page = _logged_in(browser, base, size, "nurse.a@example.test")
    page.goto(f"{base}/alerts/{ids['alert']}")  # the link in the SMS
    head = page.locator("#alert-head")
    expect(head).to_contain_text("Critical")
    expect(head).to_contain_text("ctDNA turned positive · A-001")
    expect(page.locator("#what-line")).to_contain_text("ctDNA positive, 0.42 MTM/mL")
    _on_first_screen(page, "#what-line", size)
    _on_first_screen(page, "#ack-button", size)
    expect(page.locator("#next-step")).to_contain_text("Resume the prior anti-HER2 therapy")
    expect(page.locator("#ctdna-sparkline circle")).to_have_count(3)
    expect(page.locator('#team a[href^="tel:+33"]').first).to_be_visible()
    expect(page.locator("#escalation")).to_contain_text("If nobody acknowledges by then")
    _no_sideways_scroll(page, size)
    page.screenshot(path=str(ARTIFACTS / f"alert-open-{size}.png"))
    page.screenshot(path=str(ARTIFACTS / f"alert-open-{size}-full.png"), full_page=True)

    page.locator("#ack-button").click()  # one tap, no note needed
    page.wait_for_load_state()
    expect(page.locator(".flash")).to_contain_text("acknowledged")
    expect(page.locator("#ack-button")).to_have_count(0)
    expect(page.locator("#escalation")).to_contain_text("Acknowledged by nurse.a on the web")
    _no_sideways_scroll(page, size)
    page.screenshot(path=str(ARTIFACTS / f"alert-acknowledged-{size}.png"))
    page.context.close()
    with app.app_context(), get_db(app).job_session() as s:
        stored = s.get(Alert, ids["alert"])
        assert stored.state == AlertState.ACKNOWLEDGED and stored.ack_channel == "web"


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_the_participant_page_shows_the_open_alert_first(served, browser, size):
    _app, base, ids = served
    page = _logged_in(browser, base, size, "coordinator.a@example.test")
    page.goto(f"{base}/participants/{ids['A1']}")
    banner = page.locator("#open-alerts")
    expect(banner).to_contain_text("1 alert not resolved")
    expect(banner).to_contain_text("ctDNA turned positive")
    _on_first_screen(page, "#open-alerts a.go", size)
    _no_sideways_scroll(page, size)
    page.screenshot(path=str(ARTIFACTS / f"participant-open-alert-{size}.png"))
    banner.get_by_role("link", name="Open alert").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/alerts/{ids['alert']}")
    page.context.close()


def test_a_monitor_sees_the_alert_read_only_with_masked_phones(served, browser):
    _app, base, ids = served
    page = _logged_in(browser, base, "phone", "monitor.a@example.test")
    page.goto(f"{base}/alerts/{ids['alert']}")
    expect(page.locator("#what-line")).to_contain_text("0.42 MTM/mL")
    expect(page.locator("#ack-button")).to_have_count(0)
    expect(page.locator('#team a[href^="tel:"]')).to_have_count(0)
    expect(page.locator("#team")).to_contain_text("•")
    page.screenshot(path=str(ARTIFACTS / "alert-monitor-phone.png"))
    page.context.close()


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_a_routine_task_reads_as_a_task_for_the_morning(served, browser, size):
    app, base, ids = served
    with time_machine.travel(T0, tick=False):
        task_id = _routine_task(
            app, ids["A1"], AlertKind.RESULT_OVERDUE, "browser:routine", "no result"
        )
        page = _logged_in(browser, base, size, "coordinator.a@example.test")
        page.goto(f"{base}/alerts/{task_id}")
        head = page.locator("#alert-head")
        expect(head).to_contain_text("Routine")
        expect(head).to_contain_text("Result overdue · A-001")
        expect(head).to_contain_text("no reply is needed")
        _on_first_screen(page, "#ack-button", size)
        expect(page.locator("#next-step")).to_contain_text("Ask the lab for the report")
        escalation = page.locator("#escalation")
        expect(escalation).to_contain_text("to go out Wed 31 Mar 08:00")
        expect(escalation).to_contain_text("never escalates")
        _no_sideways_scroll(page, size)
        page.screenshot(path=str(ARTIFACTS / f"alert-routine-{size}.png"), full_page=True)
        page.context.close()


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_today_lists_alerts_by_level_with_their_words(served, browser, size):
    app, base, ids = served
    with time_machine.travel(T0, tick=False):
        task_id = _routine_task(
            app,
            ids["A1"],
            AlertKind.MISSED_WINDOW,
            "browser:today-routine",
            "Signatera ctDNA draw #2: window closed 2027-03-29 without a draw",
        )
        page = _logged_in(browser, base, size, "coordinator.a@example.test")
        page.goto(f"{base}/")
        critical = page.locator(f'#open-alerts tr[data-alert-id="{ids["alert"]}"]')
        routine = page.locator(f'#open-alerts tr[data-alert-id="{task_id}"]')
        expect(critical.locator(".badge.level-critical")).to_have_text("Critical")
        expect(critical).to_contain_text("ctDNA turned positive")
        expect(routine.locator(".badge.level-routine")).to_have_text("Routine")
        expect(routine).to_contain_text("ctDNA draw window missed")
        expect(routine).to_contain_text("morning SMS, no reply needed")
        # The most urgent first.
        order = page.locator("#open-alerts tr[data-alert-id]").evaluate_all(
            "rows => rows.map(r => r.dataset.alertId)"
        )
        assert order.index(str(ids["alert"])) < order.index(str(task_id))
        _no_sideways_scroll(page, size)
        page.locator("#open-alerts").screenshot(path=str(ARTIFACTS / f"today-levels-{size}.png"))
        page.context.close()
