"""Today, the participants list and adherence in a real browser on a phone (390x844) and a laptop
(1280x800), issue 12 items 5 and 6: the header is one row on the phone (a Menu that opens without
JavaScript), nothing scrolls sideways, every table row is a card whose columns are all visible and
labelled, the "coming up" list is there, and no request fails (the favicon included).
Screenshots are kept in test-artifacts/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import select

from server.alerts import service as alerts
from server.alerts.models import AlertKind
from server.auth.models import StaffUser
from server.db import get_db
from server.participants.models import Participant, Site
from server.protocols.models import Study
from tests import factories
from tests.browser.harness import (
    ARTIFACTS,
    DESKTOP,
    PHONE,
    log_in,
    no_sideways_scroll,
    open_watched,
)

SIZES = {"phone": PHONE, "laptop": DESKTOP}


def _fits(page: Page, size: str) -> None:
    no_sideways_scroll(page, SIZES[size]["width"])


def _cells_fit(page: Page, table: str) -> None:
    """Every cell of the table is inside the screen (nothing hides past a sideways scroll)."""
    right = page.evaluate(
        """(sel) => Math.max(...[...document.querySelectorAll(sel + ' td, ' + sel + ' tbody th')]
             .map(c => c.getBoundingClientRect().right))""",
        table,
    )
    assert right <= page.viewport_size["width"], (table, right)  # type: ignore[index]


@pytest.fixture
def week_ahead(served: tuple[Any, str, dict[str, Any]]) -> dict[str, Any]:
    """An open alert, and a participant whose baseline window opens in two days."""
    app, _base, ids = served
    with app.app_context(), get_db(app).job_session() as s:
        site = s.get(Site, ids["site_a"])
        coordinator = s.exec(
            select(StaffUser).where(StaffUser.email == "coordinator.a@example.test")
        ).one()
        study = s.exec(select(Study)).one()
        today = datetime.now(UTC).astimezone(ZoneInfo("Europe/Paris")).date()
        # HEROES: the baseline draw's window opens 28 days before the anchor.
        soon = factories.make_participant(
            s, coordinator, site, study, "A-050", anchor_date=today + timedelta(days=30)
        )
        alert, _ = alerts.open_alert(
            session=s,
            kind=AlertKind.CTDNA_POSITIVE,
            trigger_key="phone",
            participant=s.get(Participant, ids["A1"]),
            site_id=ids["site_a"],
            summary="ctDNA turned positive",
            now=datetime.now(UTC),
        )
        return {"soon": soon.id, "alert": alert.id}


@pytest.mark.parametrize("size", list(SIZES))
def test_today_participants_and_adherence_fit_the_screen(served, week_ahead, browser, size):
    _app, base, ids = served
    page, failed = open_watched(browser, SIZES[size])
    log_in(page, base, "coordinator.a@example.test")
    header = page.locator("header.top")
    menu = page.locator("details.nav-menu > summary")
    if size == "phone":
        assert header.bounding_box()["height"] <= 60  # type: ignore[index]  # one row
        expect(menu).to_be_visible()
        expect(page.get_by_role("link", name="Participants")).to_be_hidden()
    else:
        expect(menu).to_be_hidden()
        # Today, Alerts, Participants, Enroll, Adherence, On call, ACK times
        expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_count(7)

    # Today: the alert card and the coming-up list, whole on the screen.
    expect(page.locator(f'#open-alerts tr[data-alert-id="{week_ahead["alert"]}"]')).to_be_visible()
    coming = page.locator("#coming-up")
    row = coming.locator("tbody tr", has_text="A-050")
    expect(row).to_be_visible()
    expect(row).to_contain_text("opens in 2 days")
    expect(coming.get_by_role("link", name="Download CSV")).to_be_visible()
    _fits(page, size)
    _cells_fit(page, "#coming-up table")
    _cells_fit(page, "#open-alerts table")
    page.screenshot(path=str(ARTIFACTS / f"phone-today-{size}.png"), full_page=True)

    # The participants list: one card per participant on the phone, every column there.
    if size == "phone":
        menu.click()
        page.get_by_role("navigation", name="More pages").get_by_role(
            "link", name="Participants"
        ).click()
    else:
        page.get_by_role("link", name="Participants").click()
    page.wait_for_load_state()
    a1 = page.locator(f'#participants tr[data-participant-id="{ids["A1"]}"]')
    for column in ("Study · cohort", "Phone", "In window", "Next event", "Alerts"):
        cell = a1.locator(f'td[data-label="{column}"]')
        expect(cell).to_be_visible()
    if size == "phone":
        label = a1.locator('td[data-label="Phone"]').evaluate(
            "c => getComputedStyle(c, '::before').content"
        )
        assert label == '"Phone"'  # the column's name is written in the card
    _fits(page, size)
    _cells_fit(page, "#participants")
    page.screenshot(path=str(ARTIFACTS / f"phone-participants-{size}.png"), full_page=True)

    # Adherence: the figure tables too.
    page.goto(f"{base}/adherence")
    _fits(page, size)
    for table in ("#by-site-study table", "#by-event-type table", "#by-month table"):
        _cells_fit(page, table)
    page.screenshot(path=str(ARTIFACTS / f"phone-adherence-{size}.png"), full_page=True)
    assert failed == [], failed  # no 404, not even /favicon.ico
    page.context.close()


def test_the_phone_menu_works_without_javascript(served, browser):
    _app, base, _ids = served
    page, failed = open_watched(browser, SIZES["phone"], javascript=False)
    log_in(page, base, "nurse.a@example.test")
    page.locator("details.nav-menu > summary").click()
    more = page.get_by_role("navigation", name="More pages")
    expect(more.get_by_role("link", name="Adherence")).to_be_visible()
    expect(more.get_by_role("link", name="Enroll")).to_have_count(0)  # nurses do not enroll
    page.screenshot(path=str(ARTIFACTS / "phone-menu-open.png"))
    more.get_by_role("link", name="Adherence").click()
    page.wait_for_load_state()
    expect(page.locator("h1")).to_have_text("Adherence")
    # The current page is marked on the Menu button, and Log out in the menu logs out.
    expect(page.locator("details.nav-menu.current")).to_have_count(1)
    page.locator("details.nav-menu > summary").click()
    page.locator(".menu-account").get_by_role("button", name="Log out").click()
    page.wait_for_load_state()
    expect(page.get_by_label("Password")).to_be_visible()
    assert page.goto(f"{base}/").url.startswith(f"{base}/login")  # type: ignore[union-attr]
    assert [f for f in failed if "/favicon" in f] == []
    page.context.close()
