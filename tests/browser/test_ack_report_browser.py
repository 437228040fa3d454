"""The acknowledgement-time report in a real browser at 390x844 and 1280x800: a monitor sees the
month's figures and the SVG chart within the screen, nothing loaded from another host, nothing
failing; the fail-safe banner; the on-call page and its calendar link. Screenshots are kept in
test-artifacts/ (ack-report-*.png, oncall-*.png, oncall-calendar-link-*.png)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from server.auth.models import StaffUser
from server.db import get_db
from server.oncall import service as oncall
from server.participants.models import Participant, Site
from tests import clock
from tests.browser.harness import ARTIFACTS, log_in, open_watched
from tests.browser.test_status_browser import SIZES, _fits
from tests.pages.test_ack_report import TIMINGS, make_alert


@pytest.mark.parametrize("size", list(SIZES))
def test_monitor_reads_the_acknowledgement_report(served: Any, browser: Any, size: str) -> None:
    app, base, ids = served
    with app.app_context(), get_db(app).job_session() as s:
        participant = s.exec(select(Participant).where(Participant.id == ids["A1"])).one()
        start = datetime(2026, 6, 2, 8, 0, tzinfo=UTC)
        for i, (notify, ack, resolve) in enumerate(TIMINGS):
            make_alert(
                s,
                participant,
                i,
                received=start + timedelta(days=2 * i),
                notify=notify,
                ack=ack,
                resolve=resolve,
            )
    page, failed = open_watched(browser, SIZES[size])
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    log_in(page, base, "monitor.a@example.test")
    page.goto(f"{base}/reports/ack-times?from=2026-05&to=2026-07")
    expect(page.get_by_role("heading", name="Acknowledgement times")).to_be_visible()
    june = page.locator('tr[data-view="by-month"][data-month="2026-06"]')
    expect(june.locator('[data-measure="alerts"]')).to_have_text("10")
    expect(june.locator('[data-measure="ack_p50"]')).to_have_text("25")
    expect(june.locator('[data-measure="ack_60"]')).to_have_text("80.0 %")
    chart = page.locator("figure.ack-chart svg")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] <= SIZES[size]["width"] and box["height"] > 60
    expect(page.locator("rect.bar")).to_have_count(2)
    expect(page.get_by_role("link", name="Download CSV")).to_be_visible()
    _fits(page, size)
    page.screenshot(path=str(ARTIFACTS / f"ack-report-{size}.png"), full_page=True)
    assert not failed, failed
    assert all(url.startswith(base) for url in requested), requested


@pytest.mark.parametrize("size", list(SIZES))
def test_the_failsafe_banner_on_every_page_of_the_site(
    served: Any, browser: Any, size: str
) -> None:
    """An open alert that reached the fail-safe: the red banner on Today and the participants
    list, within the screen, its link to the alert."""
    app, base, ids = served
    with app.app_context(), get_db(app).job_session() as s:
        participant = s.exec(select(Participant).where(Participant.id == ids["A1"])).one()
        alert = make_alert(
            s,
            participant,
            1,
            received=datetime(2026, 6, 2, 8, 0, tzinfo=UTC),
            notify=1,
            ack=None,
            resolve=None,
            failsafe=True,
        )
        alert.failsafe_at = datetime(2026, 6, 2, 10, 0, tzinfo=UTC)
        s.add(alert)
        alert_id = alert.id
    page, failed = open_watched(browser, SIZES[size])
    log_in(page, base, "coordinator.a@example.test")
    for path in ("/", "/participants"):
        page.goto(f"{base}{path}")
        banner = page.locator("#failsafe-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("Fail-safe called")
        expect(banner.get_by_role("link")).to_have_attribute("href", f"/alerts/{alert_id}")
        _fits(page, size)
    page.screenshot(path=str(ARTIFACTS / f"failsafe-banner-{size}.png"), full_page=False)
    assert not failed, failed


@pytest.mark.parametrize("size", list(SIZES))
def test_the_oncall_page(served: Any, browser: Any, size: str) -> None:
    """The rota page: who is on call now and next per layer, the 14 days' shifts, a shift without
    a verified phone flagged; within the screen."""
    app, base, ids = served
    with app.app_context(), get_db(app).job_session() as s:
        site = s.get(Site, ids["site_a"])
        nurse = s.exec(select(StaffUser).where(StaffUser.email == "nurse.a@example.test")).one()
        coordinator = s.exec(
            select(StaffUser).where(StaffUser.email == "coordinator.a@example.test")
        ).one()
        nurse.phone_e164, nurse.is_phone_verified = "+33610000001", True
        s.add(nurse)
        oncall.set_rota(
            session=s,
            site=site,  # type: ignore[arg-type]
            layer="primary",
            period="daily",
            handover="08:00",
            handover_weekday=0,
            starts_on=date(2026, 11, 1),
            members=[nurse.id, coordinator.id],  # type: ignore[list-item]
            actor=coordinator,
            now=datetime(2026, 11, 1, tzinfo=UTC),
        )
    page, failed = open_watched(browser, SIZES[size])
    log_in(page, base, "monitor.a@example.test")
    page.goto(f"{base}/oncall")
    layer = page.locator('[data-site="SITE-A"] [data-layer="primary"]')
    expect(layer.locator('[data-who="now"]')).to_be_visible()
    expect(layer.locator('[data-who="next"]')).to_be_visible()
    # The coordinator has no verified phone: their shifts are flagged.
    expect(layer.get_by_role("alert")).to_contain_text("without a verified phone")
    layer.locator("summary").click()
    expect(layer.locator("ul.shifts li").first).to_be_visible()
    # Everyone may subscribe their own calendar: the block is there, with nothing secret in it.
    block = page.locator("#calendar-link")
    expect(block.get_by_role("button", name="Create my calendar link")).to_be_visible()
    expect(block.locator("code")).to_have_count(0)
    _fits(page, size)
    page.screenshot(path=str(ARTIFACTS / f"oncall-{size}.png"), full_page=True)
    assert not failed, failed


@pytest.mark.parametrize("size", list(SIZES))
def test_the_oncall_page_gives_the_nurse_her_calendar_link_once(
    served: Any, browser: Any, size: str
) -> None:
    """The nurse creates her calendar link: the https and webcal addresses wrap within a 390 px
    screen, a calendar app (no login, no cookie) reads her shift from it; reloaded, the page
    only says the link exists; stopped, the link is dead."""
    app, base, ids = served
    width = SIZES[size]["width"]
    started = clock.local(clock.today(), "08:00")
    if started > clock.NOW:
        started = clock.local(clock.today() - timedelta(days=1), "08:00")
    with app.app_context(), get_db(app).job_session() as s:
        site = s.get(Site, ids["site_a"])
        nurse = s.exec(select(StaffUser).where(StaffUser.email == "nurse.a@example.test")).one()
        oncall.set_rota(
            session=s,
            site=site,  # type: ignore[arg-type]
            layer="primary",
            period="daily",
            handover="08:00",
            handover_weekday=0,
            starts_on=started.astimezone(clock.PARIS).date(),
            members=[nurse.id],  # type: ignore[list-item]
            actor=nurse,
            now=clock.NOW,
        )
    page, failed = open_watched(browser, SIZES[size])
    log_in(page, base, "nurse.a@example.test")
    page.goto(f"{base}/oncall")
    block = page.locator("#calendar-link")
    expect(block).to_contain_text("no participant information")
    block.get_by_role("button", name="Create my calendar link").click()
    block = page.locator("#calendar-link")
    expect(block).to_contain_text("only this once")
    webcal, https = (
        block.locator('code[data-link="webcal"]'),
        block.locator('code[data-link="https"]'),
    )
    expect(webcal).to_have_text(
        re.compile(r"^webcal://127\.0\.0\.1:\d+/oncall/feed/[\w-]{43}\.ics$")
    )
    url = https.inner_text()
    assert url.startswith(f"{base}/oncall/feed/") and url.endswith(".ics")
    for code in (webcal, https):  # the long address wraps inside the screen
        box = code.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box
    expect(block.get_by_role("link", name="Open in my calendar app")).to_have_attribute(
        "href", webcal.inner_text()
    )
    _fits(page, size)
    page.screenshot(path=str(ARTIFACTS / f"oncall-calendar-link-{size}.png"), full_page=True)

    # A calendar app: its own client, no cookie, no login.
    calendar_app = browser.new_context()
    feed = calendar_app.request.get(url)
    assert feed.status == 200 and feed.headers["content-type"].startswith("text/calendar")
    assert started.strftime("DTSTART:%Y%m%dT%H%M%SZ") in feed.text()
    assert "SUMMARY:On call (primary) · SITE-A" in feed.text()

    page.goto(f"{base}/oncall")
    block = page.locator("#calendar-link")
    expect(block).to_contain_text("You have a calendar link, created on")
    expect(block.locator("code")).to_have_count(0)
    assert url not in page.content()
    block.get_by_role("button", name="Stop my calendar link").click()
    expect(page.get_by_role("status").filter(has_text="calendar link is stopped")).to_be_visible()
    _fits(page, size)
    assert calendar_app.request.get(url).status == 404
    calendar_app.close()
    assert not failed, failed
    page.context.close()
