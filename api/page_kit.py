"""Shared pieces of the care-team pages: the current user, permissions, phone masking, local
times, and refusals rendered as HTML pages (the JSON envelope is for the API).

Pages call the same services as the API; a page view is thin: read the query or form, call a
service, render a template.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import Flask, Response, abort, render_template, request
from flask_login import current_user

from server import labels
from server.auth.models import StaffUser
from server.auth.rules import Permission, has_permission
from server.participants.models import Participant
from server.participants.rules import mask_phone
from server.protocols.rules import weekday_date


class PageInputError(Exception):
    """A query string or form a page cannot use: rendered as a 400/422 page naming the field."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


def staff() -> StaffUser:
    """The logged-in staff user of this page request (use under @login_required)."""
    return current_user.user  # type: ignore[no-any-return]


def can(permission: str | Permission) -> bool:
    """Whether the current user's role grants the permission (templates: `can('alert:ack')`)."""
    if not current_user.is_authenticated:
        return False
    return has_permission(staff().role, Permission(permission))


def require_page(permission: Permission) -> StaffUser:
    """The current user if their role grants the permission, else a 403 page."""
    if not can(permission):
        abort(403)
    return staff()


def phone_for_display(value: Participant | str | None) -> str:
    """A phone number as this user may see it: masked for roles that may not (monitors)."""
    phone = value.phone_e164 if isinstance(value, Participant) else value
    if not phone:
        return "—"
    return phone if can(Permission.SEE_PHONE_NUMBERS) else (mask_phone(phone) or "—")


def local_time(value: datetime | None, tz: str | None = None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A UTC datetime shown in a time zone (the participant's or site's), with its abbreviation."""
    if value is None:
        return "—"
    zone = ZoneInfo(tz) if tz else ZoneInfo("UTC")
    local = value.astimezone(zone)
    return f"{local.strftime(fmt)} {local.tzname()}"


def day(value: date | datetime | None) -> str:
    """A date as YYYY-MM-DD (or a dash)."""
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d")


def weekday_day(value: date | datetime | None) -> str:
    """A date with its weekday, "Mon 2027-03-29" (English names whatever the server locale)."""
    if value is None:
        return "—"
    return weekday_date(value.date() if isinstance(value, datetime) else value)


# CSV cells a spreadsheet would run as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or a tab/CR) gets a
    leading apostrophe; numbers stay numbers; None is an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_download(header: list[str], rows: list[list[Any]], filename: str) -> Response:
    """A CSV attachment (UTF-8 with a BOM so Excel reads accents, CRLF lines, every cell made
    formula-safe). The caller audits the export."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([safe_cell(v) for v in row] for row in rows)
    return Response(
        out.getvalue().encode("utf-8"),
        mimetype="text/csv",
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


def safe_next(target: str | None, default: str) -> str:
    """A same-site relative path to go back to, else `default` (no open redirect: an
    off-site redirect from a trusted login page would help phishing)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    # Browsers read "\" as "/" and drop tabs and newlines: "/\evil.example" is off-site.
    if "\\" in target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def whole_number(raw: str, *, lo: int, hi: int) -> int | None:
    """`raw` as a whole number from lo to hi, else None. Only ASCII digits (and a leading minus
    when lo < 0): str.isdigit() also takes "²" and 5,000 digits, which int() refuses."""
    text = raw.strip()
    digits = text[1:] if text.startswith("-") and lo < 0 else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(max(abs(lo), hi))):
        return None
    value = int(text)
    return value if lo <= value <= hi else None


def query_int(name: str, default: int | None = None, *, lo: int = 0, hi: int = 10**9) -> int | None:
    """An optional integer query parameter; anything else is a clear 400 page."""
    raw = request.args.get(name, "").strip()
    if raw == "":
        return default
    value = whole_number(raw, lo=lo, hi=hi)
    if value is None:
        raise PageInputError(name, f"must be a whole number from {lo} to {hi}")
    return value


def query_choice(name: str, choices: set[str] | list[str]) -> str | None:
    """An optional query parameter that must be one of `choices`."""
    raw = request.args.get(name, "").strip()
    if raw == "":
        return None
    if raw not in choices:
        raise PageInputError(name, "must be one of " + ", ".join(sorted(choices)))
    return raw


def error_page(status: int, message: str, field: str | None = None) -> tuple[str, int]:
    """Render the HTML error page."""
    titles = {
        400: "This request cannot be used",
        403: "Not allowed",
        404: "Not found",
        409: "Conflict",
        422: "Please check the form",
    }
    return (
        render_template(
            "error.html",
            status=status,
            title=titles.get(status, "Error"),
            message=message,
            field=field,
        ),
        status,
    )


def failsafe_banner() -> list[Any]:
    """The logged-in user's sites' open alerts that reached the fail-safe: (alert, participant
    code) pairs for the red banner on every staff page, until someone acknowledges."""
    if not getattr(current_user, "is_authenticated", False):
        return []
    from server.alerts import service as alerts
    from server.db import get_session

    return alerts.failsafe_alerts(get_session(), current_user.user)


def init_app(app: Flask) -> None:
    """Jinja globals and filters the page templates share."""
    app.jinja_env.globals.update(
        can=can, phone_for_display=phone_for_display, failsafe_banner=failsafe_banner
    )
    app.jinja_env.filters["local"] = local_time
    app.jinja_env.filters["day"] = day
    app.jinja_env.filters["weekday"] = weekday_day
    # Human labels from one table (server/labels.py); `words` is the older name of the filter.
    app.jinja_env.filters["label"] = labels.label
    app.jinja_env.filters["words"] = labels.label
    app.jinja_env.filters["actor"] = labels.actor

    @app.errorhandler(PageInputError)
    def _page_input(error: PageInputError) -> Any:
        from api.errors import _rollback

        _rollback()
        return error_page(error.status, error.message, error.field)
