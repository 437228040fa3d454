"""The acknowledgement-time report in a real browser at 390x844 and 1280x800: a monitor sees the
month's figures and the SVG chart within the screen, nothing loaded from another host, nothing
failing. Screenshots are kept in test-artifacts/ (ack-report-*.png)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from server.db import get_db
from server.participants.models import Participant
from tests.browser.test_care_pages_browser import ARTIFACTS, browser, served
from tests.browser.test_status_browser import SIZES, _fits, _log_in, _open
from tests.pages.test_ack_report import TIMINGS, make_alert
from tests.results.test_concurrency import fresh_app

__all__ = ["browser", "fresh_app", "served"]


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
    page, failed = _open(browser, size)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    _log_in(page, base, "monitor.a@example.test")
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
