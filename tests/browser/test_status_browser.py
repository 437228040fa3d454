"""When the background processes stop, staff see it, on a phone (390x844) and a laptop (1280x800):
Today's red banner, and the administrators' status page with each scheduler and dispatcher,
nothing scrolling sideways. Screenshots are kept in test-artifacts/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from server.clock import utcnow
from server.db import get_db
from server.health.models import ProcessRole
from server.health.service import Heartbeats, ProcessIdentity
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


@pytest.mark.parametrize("size", list(SIZES))
def test_a_stopped_scheduler_shows_on_today_and_on_the_status_page(served, browser, size):
    app, base, _ids = served
    session_factory = get_db(app).session
    # The leader ran its last job 3 minutes ago and went quiet; a standby and a dispatcher live.
    quiet = Heartbeats(
        session_factory,
        ProcessIdentity.new(ProcessRole.SCHEDULER),
        clock=lambda: utcnow() - timedelta(minutes=3),
    )
    quiet.register()
    quiet.beat(is_leader=True, epoch=3)
    quiet.record("alerts.escalate", {"ok": True, "seconds": 0.012, "result": "{'advanced': 2}"})
    standby = Heartbeats(session_factory, ProcessIdentity.new(ProcessRole.SCHEDULER))
    standby.register()
    dispatcher = Heartbeats(session_factory, ProcessIdentity.new(ProcessRole.DISPATCHER))
    dispatcher.register()

    page, failed = open_watched(browser, SIZES[size])
    log_in(page, base, "admin.a@example.test")
    banner = page.get_by_role("alert").filter(has_text="background processes have stopped")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("have not run for 3 min")
    _fits(page, size)
    page.screenshot(path=str(ARTIFACTS / f"status-today-banner-{size}.png"), full_page=True)

    page.goto(f"{base}/admin/status")
    expect(page.get_by_role("heading", name="Not ready")).to_be_visible()
    expect(page.get_by_text("no scheduler leader has run a job for 3 min")).to_be_visible()
    rows = page.locator("table.processes tbody tr")
    expect(rows).to_have_count(3)
    stale = rows.filter(has_text=quiet.identity.id)
    expect(stale).to_contain_text("was leader")
    expect(stale).to_contain_text("alerts.escalate")
    expect(rows.filter(has_text=standby.identity.id)).to_contain_text("standby")
    _fits(page, size)
    right = page.evaluate(
        "Math.max(...[...document.querySelectorAll('table.processes td')]"
        ".map(c => c.getBoundingClientRect().right))"
    )
    assert right <= SIZES[size]["width"]
    page.screenshot(path=str(ARTIFACTS / f"status-page-{size}.png"), full_page=True)
    assert failed == [], failed
    page.context.close()
