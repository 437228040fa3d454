"""HL7 v2 ORU^R01 lab results in: parse (hl7apy), map to the results service, answer an ACK.

One message may carry several orders (OBR), each one result; they are recorded together or not
at all. The mapping (README, "HL7 v2 lab results"):

    PID-3.1 (CX.4 = study key, optional)  -> study_code (study)
    OBR-3.1 filler order number           -> accession_id (idempotency, as the JSON API)
    OBR-3.2 (else MSH-4.1, else MSH-3.1)  -> lab (accession ids are unique per lab)
    OBR-7 observation (collection) time   -> collected_at (an offset is required)
    OBR-22 results reported time          -> reported_at
    OBR-4.2 (else OBR-4.1)                -> assay
    OBX (CWE/CE/ST) value, else OBX-8     -> call (positive/negative/indeterminate/QNS)
    OBX (NM) with units MTM/mL            -> mtm_per_ml

ACK codes (original acknowledgement mode): AA accepted (a repeat included, and a result held in
quarantine for review); AE the message was read but a result cannot be recorded (nothing is
recorded); AR the message is refused before its content is read (not HL7, not ORU^R01, a version
or processing id we do not take). MSA-2 echoes MSH-10, the sender's control id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlmodel import Session

from server.errors import DomainError, ValidationFailed
from server.results import service as results
from server.results.models import ResultKind

MEDIA_TYPE = "x-application/hl7-v2+er7"
VERSIONS = ("2.3.1", "2.4", "2.5", "2.5.1")
# MLLP framing (HL7 v2 Implementation Guide, appendix C).
START_BLOCK, END_BLOCK, CARRIAGE_RETURN = b"\x0b", b"\x1c", b"\x0d"

# HL7 table 0078 (abnormal flags) and the words labs write, mapped to our calls.
CALLS = {
    "POS": "positive",
    "POSITIVE": "positive",
    "DET": "positive",
    "DETECTED": "positive",
    "NEG": "negative",
    "NEGATIVE": "negative",
    "ND": "negative",
    "NOT DETECTED": "negative",
    "IND": "indeterminate",
    "INDETERMINATE": "indeterminate",
    "QNS": "insufficient_sample",
    "INSUFFICIENT SAMPLE": "insufficient_sample",
    "INSUFFICIENT_SAMPLE": "insufficient_sample",
}
_CODED = {"CWE", "CE", "CNE", "ST", "TX", "FT", "IS"}
# Our result fields as an HL7 v2 message names them (errors about them use these names).
FIELD_NAMES = {"collected_at": "OBR-7", "reported_at": "OBR-22", "accession_id": "OBR-3"}
_DTM = re.compile(
    r"^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?(?:([+-])(\d{2})(\d{2}))?$"
)


class Rejected(DomainError):
    """AR: the message is refused before its content is read (400)."""

    status = 400
    code = "hl7_rejected"

    def __init__(self, message: str, hl7_error: str = "207", field: str = "MSH") -> None:
        super().__init__(message, {field: [message]})
        self.hl7_error = hl7_error


@dataclass
class Parsed:
    """What one ORU^R01 says: its header and one set of result fields per order."""

    control_id: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    version: str
    orders: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Receipt:
    """What happened to one message: the ACK code and text, the results recorded."""

    ack_code: str
    ack: str
    control_id: str
    ingested: list[results.Ingested] = field(default_factory=list)
    error: DomainError | None = None


def normalise(text: str) -> str:
    """Segments end with CR; tolerate LF and CRLF (files, HTTP clients) and trailing blanks."""
    lines = re.split(r"\r\n|\n|\r", text.strip("\x0b\x1c\r\n \t"))
    return "\r".join(line for line in lines if line.strip())


def header_guess(text: str) -> dict[str, str]:
    """MSH-3..MSH-10 read naively, so that even a refused message's ACK echoes its control id."""
    first = normalise(text).split("\r", 1)[0]
    if not first.startswith("MSH") or len(first) < 8:
        return {}
    sep = first[3]
    parts = first.split(sep)
    # parts[1] is MSH-2 (the encoding characters); MSH-n is parts[n-1].
    names = {
        3: "app",
        4: "facility",
        5: "to_app",
        6: "to_facility",
        10: "control_id",
        12: "version",
    }
    comp = first[4] if len(first) > 4 else "^"
    return {
        name: parts[n - 1].split(comp)[0][:50] if len(parts) >= n else ""
        for n, name in names.items()
    }


def _dtm(value: str, element: str, problems: dict[str, list[str]]) -> datetime | None:
    """An HL7 DTM with its UTC offset; one without an offset is refused (it could be any zone)."""
    if not value:
        return None
    m = _DTM.match(value.strip())
    if not m:
        problems.setdefault(element, []).append(f"{value!r} is not an HL7 date/time")
        return None
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    if sign is None:
        problems.setdefault(element, []).append("a time with a UTC offset (e.g. +0100) is required")
        return None
    try:
        offset = timedelta(hours=int(oh), minutes=int(om)) * (-1 if sign == "-" else 1)
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((frac or "0").ljust(6, "0")[:6]),
            tzinfo=timezone(offset),
        )
    except ValueError as exc:
        problems.setdefault(element, []).append(f"{value!r}: {exc}")
        return None
    return moment.astimezone(UTC)


def _component(element: Any, index: int) -> str:
    """The index-th component (1-based) of a field as sent, '' when absent."""
    parts = element.to_er7(trailing_children=True).split("^")
    return parts[index - 1].strip() if len(parts) >= index else ""


def _field(segment: Any, number: int) -> Any:
    """The first repetition of a segment's field, or None."""
    name = f"{segment.name.lower()}_{number}"
    found = [c for c in segment.children if (c.name or "").lower() == name]
    return found[0] if found else None


def _f(segment: Any, number: int, component: int = 1) -> str:
    element = _field(segment, number)
    return _component(element, component) if element is not None else ""


def _calls_from(obx: Any) -> tuple[str | None, str | None]:
    """(the call an observation's value states, the call its abnormal flag states)."""

    def read(value: str) -> str | None:
        return CALLS.get(value.upper()) if value else None

    stated = None
    if _f(obx, 2).upper() in _CODED:
        stated = read(_f(obx, 5, 1)) or read(_f(obx, 5, 2))
    return stated, read(_f(obx, 8))  # OBX-8 abnormal flags (table 0078): POS, NEG, IND …


def _one_call(stated: list[str], flagged: list[str]) -> str:
    """The order's call: what the values state, else what the flags state. None, or two that
    disagree, is no call: the service quarantines it for review (never read as negative)."""
    for calls in (stated, flagged):
        distinct = sorted(set(calls))
        if len(distinct) == 1:
            return distinct[0]
        if len(distinct) > 1:
            return ("conflicting calls " + "/".join(distinct))[:40]
    return "(no call)"


def parse(text: str) -> Parsed:
    """Read an ORU^R01 (hl7apy) into result fields per order; Rejected (AR) when it cannot be
    read as one, ValidationFailed (AE) when an order lacks what a result needs."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message

    body = normalise(text)
    if "\x00" in body:
        raise Rejected("the message must not contain NUL characters", "102")
    if not body.startswith("MSH"):
        raise Rejected("not an HL7 v2 message: it must begin with an MSH segment", "100")
    head = header_guess(body)
    if body[3:8] != "|^~\\&":
        raise Rejected("only the standard encoding characters |^~\\& are taken", "102", "MSH-2")
    if head.get("version") not in VERSIONS:
        raise Rejected(
            f"HL7 version {head.get('version')!r} is not taken (2.5.1; also "
            f"{', '.join(VERSIONS[:-1])})",
            "203",
            "MSH-12",
        )
    try:
        message = parse_message(body, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    except HL7apyException as exc:
        raise Rejected(f"not a readable HL7 v2 message: {exc}", "102") from None
    except Exception as exc:  # hl7apy raises plain errors on some damage
        raise Rejected(f"not a readable HL7 v2 message: {type(exc).__name__}", "102") from None
    try:
        return _read(message, head)
    except DomainError:
        raise
    except Exception as exc:  # a shape hl7apy accepted but we cannot walk: refuse, never crash
        raise Rejected(f"not a readable ORU^R01: {type(exc).__name__}", "102") from None


def _read(message: Any, head: dict[str, str]) -> Parsed:
    msh = message.msh
    message_type = f"{_f(msh, 9, 1)}^{_f(msh, 9, 2)}".upper()
    if message_type != "ORU^R01":
        raise Rejected(f"only ORU^R01 is taken here, not {message_type}", "200", "MSH-9")
    version = _f(msh, 12)
    if _f(msh, 11) not in ("P", ""):
        raise Rejected(
            f"processing id {_f(msh, 11)!r}: only production (P) results are recorded",
            "202",
            "MSH-11",
        )
    parsed = Parsed(
        control_id=_f(msh, 10) or head.get("control_id", ""),
        sending_application=_f(msh, 3),
        sending_facility=_f(msh, 4),
        receiving_application=_f(msh, 5),
        receiving_facility=_f(msh, 6),
        version=version,
    )
    problems: dict[str, list[str]] = {}
    patient: tuple[str, str | None] | None = None
    current: dict[str, Any] | None = None
    n = 0
    for segment in message.children:
        name = (segment.name or "").upper()
        if name == "PID":
            code = _f(segment, 3, 1)
            study = _f(segment, 3, 4) or None
            patient = (code, study) if code else None
            if not code:
                problems.setdefault("PID-3", []).append("the participant's study code is required")
        elif name == "OBR":
            n += 1
            where = f"OBR[{n}]"
            accession = _f(segment, 3, 1)
            lab = _f(segment, 3, 2) or parsed.sending_facility or parsed.sending_application
            if not accession:
                problems.setdefault(f"{where} OBR-3", []).append(
                    "the filler order number (the lab's accession id) is required"
                )
            if _f(segment, 25) not in ("F", "C", ""):
                problems.setdefault(f"{where} OBR-25", []).append(
                    f"result status {_f(segment, 25)!r}: only final (F) or corrected (C) "
                    "results are recorded"
                )
            collected = _dtm(_f(segment, 7), f"{where} OBR-7", problems)
            if not _f(segment, 7):
                problems.setdefault(f"{where} OBR-7", []).append("the collection time is required")
            current = {
                "lab": (lab or "hl7v2")[:64],
                "study": patient[1] if patient else None,
                "study_code": patient[0] if patient else "",
                "accession_id": accession[:64],
                "collected_at": collected,
                "reported_at": _dtm(_f(segment, 22), f"{where} OBR-22", problems),
                "assay": ((_f(segment, 4, 2) or _f(segment, 4, 1)) or "ctDNA")[:64],
                "call": None,
                "_stated": [],
                "_flagged": [],
                "mtm_per_ml": None,
                "pam_mutation": None,
            }
            if patient is None:
                problems.setdefault("PID-3", []).append("a PID segment must precede each OBR")
            parsed.orders.append(current)
        elif name == "OBX":
            if current is None:
                problems.setdefault("OBX", []).append("an OBX must follow its OBR")
                continue
            kind = _f(segment, 2).upper()
            if kind == "NM" and "MTM" in _f(segment, 6, 1).upper():
                raw = _f(segment, 5)
                try:
                    current["mtm_per_ml"] = float(raw)
                except ValueError:
                    problems.setdefault(f"OBR[{n}] OBX-5", []).append(f"{raw!r} is not a number")
            stated, flagged = _calls_from(segment)
            current["_stated"] += [stated] if stated else []
            current["_flagged"] += [flagged] if flagged else []
    if not parsed.orders and "OBR" not in problems:
        problems.setdefault("OBR", []).append("an ORU^R01 needs at least one OBR with its OBX")
    for order in parsed.orders:
        # No readable call: quarantined for review by the service, never read as negative.
        order["call"] = _one_call(order.pop("_stated"), order.pop("_flagged"))
    if problems:
        raise ValidationFailed(
            "the message cannot be recorded: "
            + "; ".join(f"{k} {' and '.join(v)}" for k, v in problems.items()),
            problems,
        )
    return parsed


def record(
    *,
    session: Session,
    parsed: Parsed,
    now: datetime,
    actor: str,
    actor_user_id: int | None = None,
    site_ids: Any = None,
) -> list[results.Ingested]:
    """Every order of the message through the same results service as the JSON API (the same
    idempotency, quarantine, rules and alerts). The caller commits, or rolls back on an error."""
    out = []
    for order in parsed.orders:
        args = dict(order)
        out.append(
            results.ingest(
                session=session,
                kind=ResultKind.CTDNA,
                source=args.pop("lab"),
                accession_id=args.pop("accession_id"),
                study_code=args.pop("study_code"),
                study_key=args.pop("study"),
                fields=args,
                now=now,
                actor=actor,
                actor_user_id=actor_user_id,
                site_ids=site_ids,
                field_names=FIELD_NAMES,
            )
        )
    return out


def ack(
    *,
    code: str,
    control_id: str,
    now: datetime,
    to_application: str = "",
    to_facility: str = "",
    error: DomainError | None = None,
    hl7_error: str = "207",
) -> str:
    """An ACK (hl7apy builds and escapes it): MSA-1 the code, MSA-2 the sender's control id, and
    for AE/AR one ERR per problem (ERR-3 the HL7 table 0357 code, ERR-8 the words)."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.core import Message

    message = Message("ACK", version="2.5.1", validation_level=VALIDATION_LEVEL.TOLERANT)
    message.msh.msh_3 = "STEPDOWN"
    if to_application:
        message.msh.msh_5 = _safe(to_application)
    if to_facility:
        message.msh.msh_6 = _safe(to_facility)
    message.msh.msh_7 = now.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
    message.msh.msh_9 = "ACK^R01^ACK"
    message.msh.msh_10 = f"ACK{now.strftime('%Y%m%d%H%M%S%f')}"[:20]
    message.msh.msh_11 = "P"
    message.msh.msh_12 = "2.5.1"
    message.msa.msa_1 = code
    message.msa.msa_2 = _safe(control_id)
    if error is not None:
        names = {
            "100": "Segment sequence error",
            "101": "Required field missing",
            "102": "Data type error",
            "200": "Unsupported message type",
            "202": "Unsupported processing id",
            "203": "Unsupported version id",
            "207": "Application internal error",
        }
        lines = [f"{k}: {'; '.join(v)}" for k, v in error.fields.items()] or [error.message]
        for line in lines[:10]:
            err = message.add_segment("ERR")
            err.err_3 = f"{hl7_error}^{names.get(hl7_error, 'Application error')}^HL70357"
            err.err_4 = "E"
            err.err_8 = re.sub(r"[\r\n]", " ", line[:250])  # hl7apy escapes | ^ ~ \\ &
    return message.to_er7()  # type: ignore[no-any-return]


def _safe(value: str) -> str:
    """A header value echoed back: no separators, so it cannot break the ACK's structure."""
    return re.sub(r"[|^~\\&\r\n]", "", value)[:50]


def receive(
    *,
    session: Session,
    text: str,
    now: datetime,
    actor: str,
    actor_user_id: int | None = None,
    site_ids: Any = None,
    commit: Callable[[], None] | None = None,
) -> Receipt:
    """One message in, one ACK out: parsed, recorded (commit() called on success), or nothing
    recorded (the session rolled back) with AE/AR naming why."""
    head = header_guess(text)
    control_id = head.get("control_id", "")
    reply: dict[str, Any] = {
        "to_application": head.get("app", ""),
        "to_facility": head.get("facility", ""),
    }
    try:
        parsed = parse(text)
        control_id = parsed.control_id
        ingested = record(
            session=session,
            parsed=parsed,
            now=now,
            actor=actor,
            actor_user_id=actor_user_id,
            site_ids=site_ids,
        )
        if commit is not None:
            commit()
    except Rejected as exc:
        session.rollback()
        return Receipt(
            "AR",
            ack(
                code="AR",
                control_id=control_id,
                now=now,
                error=exc,
                hl7_error=exc.hl7_error,
                **reply,
            ),
            control_id,
            error=exc,
        )
    except DomainError as exc:
        session.rollback()
        hl7_error = "101" if exc.status == 422 else "207"
        return Receipt(
            "AE",
            ack(code="AE", control_id=control_id, now=now, error=exc, hl7_error=hl7_error, **reply),
            control_id,
            error=exc,
        )
    return Receipt(
        "AA", ack(code="AA", control_id=control_id, now=now, **reply), control_id, ingested
    )
