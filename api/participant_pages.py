"""Participants: the filtered list with search, and the enrollment form with its dry-run
timeline."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import marshmallow as ma
from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import login_required
from sqlmodel import Session, col, select
from werkzeug.wrappers import Response

from api.page_kit import PageInputError, query_choice, query_int, require_page, whole_number
from api.schemas import ParticipantCreateSchema
from server.auth.models import StaffUser
from server.auth.rules import Permission
from server.auth.scoping import sites_query
from server.clock import utcnow
from server.db import get_session
from server.errors import DomainError
from server.participants import entry_gate, service
from server.participants.models import Locale, ParticipantStatus, Site
from server.participants.rules import default_locale
from server.protocols import rules as engine
from server.protocols.definition import STOP_DATE_FACT, Protocol
from server.protocols.models import Study
from server.protocols.service import current_protocols

bp = Blueprint("participants_pages", __name__)

PAGE_SIZE = 50
SEARCH_MAX = 32
# Rows of the previewed timeline shown at once; the rest sit behind "show all".
PREVIEW_ROWS = 40
# The form enrols into screening (a protocol with an entry gate: the gate decides) or into the
# statuses that plan the whole schedule (what the preview then shows).
ENROLL_STATUSES = (
    ParticipantStatus.OFF_TREATMENT_MONITORING,
    ParticipantStatus.ACTIVE,
    ParticipantStatus.SCREENING,
)
# Short option texts (a select cuts long ones off, on a phone first); the meaning below the field.
STATUS_LABELS = {
    ParticipantStatus.OFF_TREATMENT_MONITORING: "Off treatment, monitored",
    ParticipantStatus.ACTIVE: "Active",
    ParticipantStatus.SCREENING: "Screening (entry gate)",
}
STATUS_MEANINGS = {
    ParticipantStatus.OFF_TREATMENT_MONITORING: "therapy stopped; followed by the protocol's "
    "monitoring schedule (with an entry gate: its facts attested below)",
    ParticipantStatus.ACTIVE: "on study treatment (e.g. an adaptive arm's cycles)",
    ParticipantStatus.SCREENING: "the protocol's entry gate decides: only its events are planned; "
    "monitoring starts on its own once the facts are in and the stop date is confirmed",
}
_MISSING = ma.fields.Field.default_error_messages["required"]
LOCALE_LABELS = {Locale.EN: "English", Locale.FR: "Français", Locale.ZH: "中文"}


def _studies(session: Session) -> list[tuple[Study, Protocol]]:
    """The studies in the database whose protocol this installation runs, by key."""
    loaded = current_protocols()
    rows = session.exec(select(Study).order_by(col(Study.key))).all()
    return [(s, loaded[s.protocol_key]) for s in rows if s.protocol_key in loaded]


# --- the list ------------------------------------------------------------------------------------


@bp.get("/participants")
@login_required
def participants() -> str:
    """The participants of my sites, filtered by the query string (a shareable URL)."""
    user = require_page(Permission.PARTICIPANT_READ)
    session = get_session()
    sites = list(session.exec(sites_query(user).order_by(col(Site.code))).all())
    studies = _studies(session)
    cohorts: dict[str, list[str]] = {}
    for study, protocol in studies:
        for key in protocol.cohort_keys():
            cohorts.setdefault(key, []).append(study.key)

    site_id = query_int("site_id")
    # Any site id that is not one of mine is the same 400, whether the site exists or not.
    if site_id is not None and site_id not in {s.id for s in sites}:
        raise PageInputError("site_id", "not one of your sites")
    search = request.args.get("search", "").strip()
    if len(search) > SEARCH_MAX:
        raise PageInputError("search", f"at most {SEARCH_MAX} characters")
    filters: dict[str, Any] = {
        "site_id": site_id,
        "study": query_choice("study", [s.key for s, _ in studies]),
        "cohort": query_choice("cohort", list(cohorts)),
        "status": query_choice("status", [s.value for s in ParticipantStatus]),
        "adherence_below": query_int("adherence_below", lo=0, hi=100),
        "search": search or None,
    }
    page_number = query_int("page", 1, lo=1) or 1
    now = utcnow()
    page = service.list_participants(
        session=session,
        user=user,
        page=page_number,
        page_size=PAGE_SIZE,
        study=filters["study"],
        site_id=filters["site_id"],
        status=ParticipantStatus(filters["status"]) if filters["status"] else None,
        cohort=filters["cohort"],
        search=filters["search"],
        adherence_below=filters["adherence_below"],
        now=now,
        order="study_code",
    )
    active = {k: v for k, v in filters.items() if v is not None}
    return render_template(
        "participants.html",
        page=page,
        pages=math.ceil(page.total / PAGE_SIZE),
        details=service.list_details(session=session, participants=page.items, now=now),
        filters=filters,
        active=active,
        sites=sites,
        site_by_id={s.id: s for s in sites},
        studies=studies,
        # Every study, also one whose protocol file is absent (the rows still name it).
        study_by_id={s.id: s for s in session.exec(select(Study))},
        cohorts=cohorts,
        statuses=list(ParticipantStatus),
    )


# --- enrolment -----------------------------------------------------------------------------------

FORM_FIELDS = (
    "study",
    "site_id",
    "study_code",
    "cohort",
    "anchor_date",
    "status",
    "timezone",
    "locale",
    "phone",
)


@dataclass
class Checked:
    """A form that passed every check: the values `enroll` will be given, and the timeline."""

    values: dict[str, Any]
    anchor_date: date
    timeline: dict[str, Any]
    check: service.EnrollmentCheck


@dataclass
class FormState:
    """What the form shows: the values as typed (or normalised), and the messages by field."""

    values: dict[str, str]
    errors: dict[str, list[str]] = field(default_factory=dict)


# Entry-gate fields: gate.<fact>.value and gate.<fact>.observed_on, and gate.stop_date.
GATE_PREFIX = "gate."
GATE_FIELD_MAX = 40


def _read_form() -> FormState:
    values = {name: request.form.get(name, "").strip() for name in FORM_FIELDS}
    values["has_sms_consent"] = "on" if request.form.get("has_sms_consent") else ""
    gate = [k for k in request.form if k.startswith(GATE_PREFIX)]
    if len(gate) > GATE_FIELD_MAX:
        raise PageInputError("gate", "too many entry-gate fields")
    for name in gate:
        values[name] = request.form.get(name, "").strip()[:64]
    return FormState(values)


def _gate_answers(form: FormState, protocol: Protocol) -> dict[str, dict[str, Any]]:
    """The entry-gate facts the form attests, as `enroll` takes them; unreadable dates become
    messages on the fact."""
    gate = protocol.entry_gate
    if gate is None:
        return {}
    v = form.values
    out: dict[str, dict[str, Any]] = {}
    for key in [f.key for f in gate.facts] + [STOP_DATE_FACT]:
        prefix = f"{GATE_PREFIX}{key}"
        value = v.get(f"{prefix}.value", "") if key != STOP_DATE_FACT else ""
        raw_day = v.get(f"{prefix}.observed_on", "") if key != STOP_DATE_FACT else v.get(prefix, "")
        if not value and not raw_day:
            continue
        try:
            day = date.fromisoformat(raw_day) if raw_day else None
        except ValueError:
            form.errors.setdefault(f"eligibility.{key}", []).append("a date, YYYY-MM-DD")
            continue
        if day is None:
            form.errors.setdefault(f"eligibility.{key}", []).append("give the date it held")
            continue
        out[key] = {"value": value, "observed_on": day}
    return out


def _default_form(sites: list[Site], studies: list[tuple[Study, Protocol]]) -> FormState:
    values = dict.fromkeys(FORM_FIELDS, "")
    values["has_sms_consent"] = ""
    values["status"] = ENROLL_STATUSES[0].value
    if any(pr.entry_gate is not None for _, pr in studies):
        # The protocol's entry gate decides who enters monitoring: start there.
        values["status"] = ParticipantStatus.SCREENING.value
    site = sites[0] if len(sites) == 1 else None
    protocol = studies[0][1] if len(studies) == 1 else None
    if site is not None:
        values["site_id"] = str(site.id)
    if len(studies) == 1:
        study, protocol = studies[0]
        values["study"] = study.key
        if len(protocol.cohort_keys()) == 1:
            values["cohort"] = f"{study.key}:{protocol.cohort_keys()[0]}"
    values["locale"] = _default_locale(site, protocol)
    return FormState(values)


def _default_locale(site: Site | None, protocol: Protocol | None) -> str:
    """The participant's language before anyone picks one: the site's (from its country; a
    Paris site is French whatever the sponsor), else, no site chosen yet, the study's protocol's,
    else English."""
    if site is not None:
        return default_locale(site.country)
    return protocol.locale.value if protocol is not None else Locale.EN.value


def _cohort_key(form: FormState) -> str | None:
    """The cohort key of the form's "STUDY:cohort" option (a bare key is taken as is)."""
    raw = form.values["cohort"]
    if not raw:
        return None
    study, sep, key = raw.partition(":")
    if not sep:
        return raw
    if study != form.values["study"]:
        form.errors.setdefault("cohort", []).append(
            f"is a cohort of {study}, not of the chosen study"
            + (f" {form.values['study']}" if form.values["study"] else "")
        )
        return None
    return key


def _check(session: Session, user: StaffUser, form: FormState, now: datetime) -> Checked | None:
    """Every check the enrolment makes (the API's schema, then the service's own checks), and
    the planned timeline. Messages land in form.errors; None when there are any."""
    v = form.values
    cohort = _cohort_key(form)
    if v["status"] and v["status"] not in {s.value for s in ENROLL_STATUSES}:
        form.errors.setdefault("status", []).append(
            "choose one of " + ", ".join(s.value for s in ENROLL_STATUSES)
        )
    raw: dict[str, Any] = {k: v[k] for k in FORM_FIELDS if v[k] and k != "cohort"}
    if cohort:
        raw["cohort"] = cohort
    site_id = whole_number(v["site_id"], lo=0, hi=10**18)  # the schema says which ids exist
    if site_id is not None:
        raw["site_id"] = site_id
    raw["has_sms_consent"] = bool(v["has_sms_consent"])
    try:
        args = ParticipantCreateSchema().load(raw)
    except ma.ValidationError as exc:
        messages = exc.normalized_messages()
        for name, msgs in messages.items():
            form.errors.setdefault(str(name), []).extend(
                "required" if m == _MISSING else str(m)
                for m in (msgs if isinstance(msgs, list) else [msgs])
            )
        args = {k: val for k, val in raw.items() if k not in messages}
    status = ParticipantStatus(args.get("status") or ENROLL_STATUSES[0].value)
    protocol = next((pr for st, pr in _studies(session) if st.key == args.get("study")), None)
    eligibility = _gate_answers(form, protocol) if protocol is not None else {}
    try:
        check = service.check_enrollment(
            session=session,
            user=user,
            study=args.get("study", ""),
            site_id=args.get("site_id", 0),
            study_code=args.get("study_code", ""),
            timezone=args.get("timezone"),
            cohort=args.get("cohort"),
            anchor_date=args.get("anchor_date"),
            status=status,
            phone=args.get("phone"),
            has_sms_consent=args["has_sms_consent"],
            eligibility=eligibility,
            now=now,
        )
    except DomainError as exc:
        for name, msgs in exc.fields.items():
            # The schema's message about a field comes first; the service's would repeat it.
            if name not in form.errors:
                form.errors[name] = list(msgs)
        return None
    if form.errors:
        return None
    anchor = args["anchor_date"]
    gate = check.protocol.entry_gate
    try:
        timeline = engine.timeline(
            check.protocol,
            cohort=check.cohort or (gate.on_pass.cohort if gate else None) or "",
            anchor_date=anchor,
            tz=check.timezone,
        )
    except (ValueError, OverflowError):
        # A date the calendar arithmetic cannot carry (year 9999 and the like).
        form.errors["anchor_date"] = ["too far from today to plan a schedule"]
        return None
    values = {
        "study": check.study.key,
        "site_id": check.site.id,
        "study_code": args["study_code"],
        "cohort": check.cohort,
        "anchor_date": anchor.isoformat(),
        "status": status.value,
        "timezone": check.timezone,
        "locale": args["locale"],
        "phone": check.phone_e164,
        "has_sms_consent": args["has_sms_consent"],
        "eligibility": {
            k: {"value": a["value"], "observed_on": a["observed_on"].isoformat()}
            for k, a in sorted(eligibility.items())
        },
    }
    # The form now shows what will be saved: the phone in E.164, the zone filled in.
    v.update(
        {
            "cohort": f"{check.study.key}:{check.cohort}",
            "timezone": check.timezone,
            "phone": check.phone_e164 or "",
            "study_code": args["study_code"],
        }
    )
    return Checked(values=values, anchor_date=anchor, timeline=timeline, check=check)


def participants_events(session: Session, participant_id: int) -> list[Any]:
    """The events stored for a participant (what enrolment planned)."""
    from server.schedules.models import ScheduleEvent

    return list(
        session.exec(select(ScheduleEvent.id).where(ScheduleEvent.participant_id == participant_id))
    )


def _digest(user: StaffUser, checked: Checked) -> str:
    """An HMAC of the normalised values and the protocol version they were previewed with."""
    protocol = checked.check.protocol
    message = json.dumps(
        {
            **checked.values,
            "user": user.id,
            "protocol": [protocol.key, protocol.version, protocol.sha256],
        },
        sort_keys=True,
    )
    key = hashlib.sha256(
        b"stepdown.enroll-preview:" + str(current_app.config["SECRET_KEY"]).encode()
    ).digest()
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _timeline_view(
    timeline: dict[str, Any], anchor: date, now: datetime, *, screening: bool = False
) -> dict[str, Any]:
    gate = timeline.get("entry_gate")
    if gate is not None and screening:
        # In screening only the gate's events are planned; the rest is the passing path's.
        timeline = {**timeline, "events": gate["screening_events"]}
    events = [
        e
        | {
            "target_weekday": engine.weekday_date(date.fromisoformat(e["target_date"])),
            "offset": engine.offset_from_anchor(anchor, date.fromisoformat(e["target_date"])),
        }
        for e in timeline["events"]
    ]
    closed = sum(1 for e in events if datetime.fromisoformat(e["window_close_at"]) <= now)
    return {
        "events": events,
        "count": len(events),
        "first": events[0]["target_date"] if events else None,
        "last": events[-1]["target_date"] if events else None,
        "shown": events[:PREVIEW_ROWS],
        "rest": events[PREVIEW_ROWS:],
        "closed": closed,
        "version": timeline["version"],
        "time_zone": timeline["time_zone"],
        "choices": timeline.get("participant_choices", []),
        "gate": gate,
        "screening": bool(gate is not None and screening),
    }


@bp.route("/participants/new", methods=["GET", "POST"])
@login_required
def enroll() -> str | Response | tuple[str, int]:
    """Enroll a participant after seeing the planned timeline."""
    user = require_page(Permission.PARTICIPANT_WRITE)
    session = get_session()
    sites = list(
        session.exec(
            sites_query(user).where(col(Site.is_active).is_(True)).order_by(col(Site.code))
        ).all()
    )
    studies = _studies(session)

    def page(form: FormState, status: int = 200, **extra: Any) -> tuple[str, int]:
        context: dict[str, Any] = {
            "form": form,
            "sites": sites,
            "studies": studies,
            "statuses": [(s.value, STATUS_LABELS[s], STATUS_MEANINGS[s]) for s in ENROLL_STATUSES],
            # Each gated study's facts with the values a person may attest.
            "gates": [
                (
                    st.key,
                    pr.entry_gate,
                    [(f, entry_gate.fact_values(pr, f)) for f in pr.entry_gate.facts],
                )
                for st, pr in studies
                if pr.entry_gate is not None
            ],
            "locales": [(loc.value, LOCALE_LABELS[loc]) for loc in Locale],
            "zones": sorted(zoneinfo.available_timezones()),
            "client_data": {
                "sites": {
                    str(s.id): {"tz": s.timezone, "locale": default_locale(s.country)}
                    for s in sites
                },
                "studies": {st.key: {"locale": pr.locale.value} for st, pr in studies},
            },
            "preview": None,
            "digest": None,
            "changed": False,
        }
        return render_template("enroll.html", **(context | extra)), status

    if request.method == "GET":
        return page(_default_form(sites, studies))
    action = request.form.get("action", "preview")
    if action not in ("preview", "enroll", "refresh"):
        raise PageInputError("action", "must be preview, enroll or refresh")
    form = _read_form()
    if action == "refresh":
        # Without JavaScript: the study was chosen, show its cohorts (nothing is checked yet).
        return page(form)
    now = utcnow()
    checked = _check(session, user, form, now)
    if checked is None:
        return page(form, 422)
    digest = _digest(user, checked)
    previewed = hmac.compare_digest(request.form.get("digest", ""), digest)
    if action == "enroll" and previewed:
        values = checked.values
        try:
            participant = service.enroll(
                session=session,
                user=user,
                study=values["study"],
                site_id=values["site_id"],
                study_code=values["study_code"],
                timezone=values["timezone"],
                cohort=values["cohort"],
                anchor_date=checked.anchor_date,
                status=ParticipantStatus(values["status"]),
                locale=Locale(values["locale"]),
                phone=values["phone"],
                has_sms_consent=values["has_sms_consent"],
                eligibility={
                    k: {"value": a["value"], "observed_on": date.fromisoformat(a["observed_on"])}
                    for k, a in values["eligibility"].items()
                },
                now=now,
            )
        except DomainError as exc:
            # Someone else took the code (or the like) between the preview and now.
            session.rollback()
            form.errors = {name: list(msgs) for name, msgs in exc.fields.items()} or {
                "_form": [exc.message]
            }
            return page(form, 422)
        session.commit()
        planned = len(participants_events(session, participant.id))  # type: ignore[arg-type]
        gate_note = (
            " (in screening: the entry gate decides when monitoring starts)"
            if participant.status == ParticipantStatus.SCREENING
            else ""
        )
        flash(f"{participant.study_code} enrolled: {planned} events planned{gate_note}.", "info")
        return redirect(url_for("participant_page.show", participant_id=participant.id))
    # A preview, or an "Enroll" whose values are not the ones previewed: show the timeline
    # (again); nothing is saved.
    changed = action == "enroll"
    return page(
        form,
        409 if changed else 200,
        preview=_timeline_view(
            checked.timeline,
            checked.anchor_date,
            now,
            screening=checked.values["status"] == ParticipantStatus.SCREENING.value,
        ),
        digest=digest,
        changed=changed,
    )
