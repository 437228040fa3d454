"""The `stepdown` command line: database, accounts, demo data (more commands join later)."""

from __future__ import annotations

import getpass
import sys
from datetime import date
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, FlaskGroup, with_appcontext
from sqlmodel import col, select

from server import demo, migrate
from server.auth import service as auth_service
from server.auth.models import Role, StaffUser
from server.clock import utcnow
from server.db import get_db
from server.demo import DEMO_PASSWORD
from server.participants.models import Site
from server.participants.rules import is_valid_timezone
from server.protocols import service as protocols
from server.protocols.models import Study
from server.surveys.commands import instruments_group

__all__ = ["DEMO_PASSWORD", "main", "register"]


def register(app: Flask) -> None:
    """Attach the commands to the app's CLI."""
    app.cli.add_command(create_admin)
    app.cli.add_command(seed_demo)
    app.cli.add_command(db_group)
    app.cli.add_command(protocol_group)
    app.cli.add_command(scheduler_command)
    app.cli.add_command(dispatcher_command)
    app.cli.add_command(status_command)
    app.cli.add_command(results_group)
    app.cli.add_command(instruments_group)
    app.cli.add_command(mllp_command)
    app.cli.add_command(export_group)


@click.group("db", cls=AppGroup, help="Database schema (migrations).")
def db_group() -> None:
    pass


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to a revision (creates the SQLite file if needed)."""
    url = current_app.config["DATABASE_URL"]
    _ensure_sqlite_dir(url)
    migrate.upgrade(url, revision)
    click.echo(f"database at {revision}")


@db_group.command("check")
def db_check() -> None:
    """Fail if the models and the migrations disagree."""
    migrate.check(current_app.config["DATABASE_URL"])
    click.echo("models and migrations agree")


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        from pathlib import Path

        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)


@click.command("create-admin")
@with_appcontext
@click.option("--email", required=True)
@click.option("--name", "full_name", default="Administrator", show_default=True)
@click.option("--password", default=None, help="prompted for when omitted")
@click.option("--site", "site_codes", multiple=True, help="site code(s) to belong to")
def create_admin(
    email: str, full_name: str, password: str | None, site_codes: tuple[str, ...]
) -> None:
    """Create an administrator account."""
    if password is None:
        password = getpass.getpass("Password: ")
    problem = auth_service.password_problem(password)
    if problem:
        raise click.UsageError(f"password {problem}")
    with get_db().job_session() as session:
        if session.exec(select(StaffUser).where(StaffUser.email == email.lower())).first():
            raise click.UsageError(f"{email} already exists")
        site_ids: list[int] = []
        for code in site_codes:
            site = session.exec(select(Site).where(Site.code == code)).first()
            if site is None:
                raise click.UsageError(f"no site {code}")
            site_ids.append(site.id)  # type: ignore[arg-type]
        auth_service.create_user(
            session=session,
            actor=None,
            email=email,
            full_name=full_name,
            password=password,
            role=Role.ADMIN,
            site_ids=site_ids,
            now=utcnow(),
        )
    click.echo(f"admin {email} created")


@click.command("seed-demo")
@with_appcontext
@click.option("--if-empty", is_flag=True, help="do nothing when any staff user exists")
@click.option("--quiet", is_flag=True, help="one line, no logins (`make run` prints them last)")
def seed_demo(if_empty: bool, quiet: bool) -> None:
    """Create the demo: two sites, four studies, one staff user per role per site, and six
    participants with months of history (results, scans, questionnaires, alerts)."""
    with demo.one_transaction(get_db()) as session:
        if session.exec(select(StaffUser)).first() is not None:
            if if_empty:
                click.echo("demo data already present" + ("" if quiet else "; logins:"))
                if not quiet:
                    _print_logins(demo.staff_emails(session))
                return
            raise click.UsageError("the database already has users; seed-demo wants an empty one")
        emails = demo.seed(
            session=session, now=utcnow(), public_base_url=current_app.config["PUBLIC_BASE_URL"]
        )
    if quiet:
        click.echo(f"demo data created: {len(emails)} staff logins, links to {_public_url()}")
        return
    _print_logins(emails)
    click.echo(demo.WHAT_TO_LOOK_AT)


def _public_url() -> str:
    return str(current_app.config["PUBLIC_BASE_URL"])


@click.group("protocol", cls=AppGroup, help="Trial protocols: list, preview, decisions, amend.")
def protocol_group() -> None:
    pass


@protocol_group.command("list")
def protocol_list() -> None:
    """List the protocols found in config/protocols/."""
    for key, protocol in sorted(protocols.current_protocols().items()):
        cohorts = ", ".join(protocol.cohort_keys())
        click.echo(f"{protocol.study:<12} v{protocol.version:<4} {key}.yaml  cohorts: {cohorts}")


@protocol_group.command("preview")
@click.argument("protocol_key")
@click.option(
    "--cohort",
    default=None,
    help="cohort or arm key; required when the protocol has several (`stepdown protocol list` "
    "shows them, e.g. HEROES: stop or continue)",
)
@click.option("--anchor", "anchor", required=True, help="anchor date, YYYY-MM-DD (2027-01-04)")
@click.option("--tz", "tz", default=None, help="IANA time zone (default: the protocol's)")
@click.option(
    "--choice",
    "choice_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="a participant choice, e.g. imaging_interval_after_year_1='6 months' (default: the "
    "protocol's)",
)
@click.option("--json", "as_json", is_flag=True, help="print the timeline as JSON")
def protocol_preview(
    protocol_key: str,
    cohort: str | None,
    anchor: str,
    tz: str | None,
    choice_args: tuple[str, ...],
    as_json: bool,
) -> None:
    """Dry run: print every planned event of a protocol for an anchor date. Creates nothing."""
    import json

    from server.errors import DomainError
    from server.protocols import rules as engine
    from server.schedules.service import resolve_cohort

    try:
        anchor_date = date.fromisoformat(anchor)
    except ValueError:
        raise click.BadParameter(
            f"{anchor!r} is not a date written YYYY-MM-DD (for 4 January 2027: 2027-01-04)",
            param_hint="--anchor",
        ) from None
    try:
        protocol = protocols.find_protocol(protocol_key)
        if cohort is None and protocol.entry_gate is not None:
            # The entry gate picks the cohort of its passing path (HEROES: stop).
            cohort = protocol.entry_gate.on_pass.cohort
        if cohort is None and len(protocol.cohort_keys()) > 1:
            raise click.UsageError(
                f"--cohort is required for {protocol.study}: one of "
                f"{', '.join(protocol.cohort_keys())}"
            )
        chosen = resolve_cohort(protocol, cohort, required=True)
        pairs = [arg.partition("=") for arg in choice_args]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError("write --choice KEY=VALUE")
        values = engine.check_participant_choices(
            protocol, {k.strip(): v.strip() for k, _, v in pairs}
        )
    except (DomainError, ValueError) as exc:
        raise click.UsageError(str(getattr(exc, "message", exc))) from None
    zone = tz or protocol.time_zone
    if zone is None or not is_valid_timezone(zone):
        raise click.UsageError(f"--tz {zone!r} is not a known IANA time zone")
    data = engine.timeline(
        protocol,
        cohort=chosen,  # type: ignore[arg-type]
        anchor_date=anchor_date,
        tz=zone,
        participant_choices=values,
    )
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(
        f"{protocol.study} v{protocol.version} — cohort {chosen}, anchor {anchor_date}, "
        f"times in {zone}"
    )
    click.echo(f"{'target (local)':<38} {'window':<25} {'event':<44} phase")
    for e in data["events"]:
        window = f"{e['window_open_date']} → {e['window_close_date']}"
        label = e["label"] + (f" [{e['regimen']}]" if e.get("regimen") else "")
        target = engine.weekday_date(date.fromisoformat(e["target_date"]))
        offset = engine.offset_from_anchor(anchor_date, date.fromisoformat(e["target_date"]))
        when = f"{target} {e['target_local'][11:16]} · {offset}"
        click.echo(f"{when:<38} {window:<25} {label[:44]:<44} {e['phase'] or ''}")
    gate = data.get("entry_gate")
    if gate:
        _echo_gate(gate, anchor_date)
    for decision in data["decisions"]:
        click.echo(
            f"decision {decision['id']}: {len(decision['rules'])} rules over "
            f"{decision['combinations']} fact combinations, {decision['team_decides']} left to "
            f"the care team on purpose (stepdown protocol decisions {protocol.study})"
        )
    for choice in data["participant_choices"]:
        shown = choice["value"] + ("" if choice["is_default"] else " (chosen)")
        click.echo(
            f"choice {choice['key']}: {shown}; default {choice['default']}, allowed "
            f"{', '.join(choice['allowed'])}, set by the {choice['decided_by']}"
        )
    click.echo(f"{len(data['events'])} events")


def _echo_gate(gate: dict[str, Any], anchor_date: date) -> None:
    """The preview's entry gate: what screening plans, the facts, and each path."""
    from server.protocols import rules as engine

    click.echo(f"entry gate: {gate['label']} (anchor = {gate['stop_date']})")
    for event in gate["screening_events"]:
        day = date.fromisoformat(event["target_date"])
        click.echo(
            f"  in screening: {event['label']} {engine.weekday_date(day)} · "
            f"{engine.offset_from_anchor(anchor_date, day)} (window {event['window_open_date']} "
            f"→ {event['window_close_date']})"
        )
    for fact in gate["facts"]:
        fails = f"; fails: {', '.join(fact['fails'])}" if fact["fails"] else ""
        where = f" of {fact['item']}" if fact["item"] else ""
        click.echo(
            f"  fact {fact['key']}: {fact['label']} — from the {fact['provenance']}{where}; "
            f"passes: {', '.join(fact['passes'])}{fails}; anything else waits"
        )
    for path in gate["paths"]:
        count = f" [{path['events']} events]" if "events" in path else ""
        click.echo(f"  if {path['outcome']}: {path['when']} → {path['then']}{count}")


@protocol_group.command("decisions")
@click.argument("protocol_key")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def protocol_decisions(protocol_key: str, as_json: bool) -> None:
    """Print every decision table as the system will apply it: each combination of the facts'
    values (unknown included) with its outcome and the rule that gives it."""
    import json

    from server.errors import DomainError
    from server.protocols import rules as engine

    try:
        protocol = protocols.find_protocol(protocol_key)
    except DomainError as exc:
        raise click.UsageError(exc.message) from None
    report = engine.decision_report(protocol)
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    for line in decision_report_lines(report):
        click.echo(line)


def decision_report_lines(report: dict[str, Any]) -> list[str]:
    """The decision report as text an investigator can read (one line per combination)."""
    out = [
        f"{report['study']} v{report['version']} — decision tables as the system applies them "
        f"({report['source_file']}, sha256 {str(report['sha256'])[:12]})",
        f"unknown = {report['unknown_means']}",
    ]
    if report["regimens"]:
        legend = "; ".join(f"{r['key']} = {r['label']}" for r in report["regimens"])
        out.append(f"regimens: {legend}")
    tables = report["tables"]
    if not tables:
        out.append("no decision tables")
    for table in tables:
        out += [
            "",
            f"{table['id']}: {table['label']} — {table['combinations']} combinations, "
            f"{table['team_decides']} left to the care team, {table['uncovered']} uncovered"
            + (" (first matching rule wins)" if table["order"] == "first_match" else ""),
            "facts:",
        ]
        for fact in table["facts"]:
            out.append(f"  {fact['name']} [{' | '.join(fact['values'])}]: {fact['reading']}")
        out.append("rules:")
        for rule in table["rules"]:
            when = ", ".join(f"{k}={'|'.join(v)}" for k, v in rule["when"].items()) or "any"
            out.append(
                f"  {rule['id']}: {when} → {rule['outcome']} ({rule['combinations']} combinations)"
            )
        names = [f["name"] for f in table["facts"]]
        widths = [max(len(f["name"]), *(len(v) for v in f["values"])) for f in table["facts"]]
        header = "  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))
        out += ["", f"{header}  →  outcome  [rule]"]
        for row in table["rows"]:
            cells = "  ".join(row["facts"][n].ljust(w) for n, w in zip(names, widths, strict=True))
            rule = row["rule_id"] or "NONE"
            if row["also_matching"]:
                rule += f", also {', '.join(row['also_matching'])}"
            out.append(f"{cells}  →  {row['outcome']['text']}  [{rule}]")
    return out


@protocol_group.command("amend")
@click.argument("study_key")
@click.option("--participant", "codes", multiple=True, help="study code(s); default: all")
@click.option("--reason", required=True, help="why (goes in the audit trail)")
def protocol_amend(study_key: str, codes: tuple[str, ...], reason: str) -> None:
    """Move participants to the protocol file's current version; re-plan only future,
    untouched events."""
    from server.participants.models import Participant
    from server.schedules import service as schedules

    now = utcnow()
    with get_db().job_session() as session:
        study = session.exec(select(Study).where(Study.key == study_key)).first()
        if study is None:
            raise click.UsageError(f"no study {study_key}")
        q = select(Participant).where(Participant.study_id == study.id)
        if codes:
            q = q.where(col(Participant.study_code).in_(codes))
        moved = 0
        for participant in session.exec(q.order_by(col(Participant.id))).all():
            result = schedules.move_to_version(
                session=session, participant=participant, now=now, actor="cli", reason=reason
            )
            if result is not None:
                moved += 1
                click.echo(f"{participant.study_code}: {result.as_dict()}")
    click.echo(f"{moved} participant(s) on the current protocol version")


@click.group("results", cls=AppGroup, help="Lab results.")
def results_group() -> None:
    pass


@results_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--lab", default="default", show_default=True, help="the sending lab")
def results_import(path: str, lab: str) -> None:
    """Import a lab's ctDNA CSV batch (study_code, accession_id, collected_at, call, mtm_per_ml,
    optional study, reported_at, assay). Every row is checked (format, then dates as the API
    checks them): one bad row imports nothing and the errors name the rows."""
    import csv

    import marshmallow as ma

    from api.schemas import CtdnaResultSchema
    from server.errors import DomainError
    from server.results import service as results
    from server.results.models import ResultKind

    schema = CtdnaResultSchema()
    rows: list[dict[str, object]] = []
    errors: list[str] = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for number, raw in enumerate(reader, start=2):  # line 1 is the header
            data = {
                k.strip(): v.strip() for k, v in raw.items() if k and v is not None and v.strip()
            }
            data.setdefault("lab", lab)
            try:
                rows.append(schema.load(data))
            except ma.ValidationError as exc:
                detail = "; ".join(
                    f"{field}: {' '.join(map(str, msgs))}"
                    for field, msgs in sorted(exc.messages_dict.items())
                )
                errors.append(f"row {number}: {detail}")
    if errors:
        for line in errors:
            click.echo(line, err=True)
        raise click.ClickException(f"{len(errors)} bad row(s); nothing imported")
    now = utcnow()
    counts = {"created": 0, "duplicates": 0, "quarantined": 0, "alerts": 0}
    with get_db().job_session() as session:
        for number, args in enumerate(rows, start=2):
            args = dict(args)
            try:
                ingested = results.ingest(
                    session=session,
                    kind=ResultKind.CTDNA,
                    source=str(args.pop("lab")),
                    accession_id=str(args.pop("accession_id")),
                    study_code=str(args.pop("study_code")),
                    study_key=args.pop("study"),  # type: ignore[arg-type]
                    fields=args,
                    now=now,
                    actor=f"cli:import:{lab}",
                )
            except DomainError as exc:
                # Impossible dates (or a changed accession) are found row by row; the session is
                # rolled back below, so one bad row still imports nothing.
                detail = "; ".join(
                    f"{field}: {' '.join(msgs)}" for field, msgs in sorted(exc.fields.items())
                )
                errors.append(f"row {number}: {detail or exc.message}")
                continue
            counts["created" if ingested.created else "duplicates"] += 1
            counts["quarantined"] += int(ingested.result.status.value == "quarantined")
            counts["alerts"] += int(ingested.alert_id is not None)
        if errors:
            for line in errors:
                click.echo(line, err=True)
            raise click.ClickException(f"{len(errors)} bad row(s); nothing imported")
    click.echo(f"imported {len(rows)} row(s): {counts}")


@click.group("export", cls=AppGroup, help="Trial data for other systems.")
def export_group() -> None:
    pass


@export_group.command("odm")
@click.argument("study_key")
@click.option(
    "--site", "site_codes", multiple=True, help="only these sites (repeatable; default: all)"
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write here, not stdout")
def export_odm(study_key: str, site_codes: tuple[str, ...], output: str | None) -> None:
    """A study as CDISC ODM 1.3.2 XML (metadata, subjects, events, results, questionnaires,
    audit trail), e.g. `stepdown export odm HEROES --site PARIS-01 > heroes.xml`. Audited."""
    from server.exports import odm

    now = utcnow()
    with get_db().job_session() as session:
        study = session.exec(select(Study).where(Study.key == study_key)).first()
        if study is None:
            raise click.ClickException(f"no study {study_key!r}")
        site_ids: list[int] | None = None
        if site_codes:
            found = session.exec(select(Site).where(col(Site.code).in_(site_codes))).all()
            missing = sorted(set(site_codes) - {s.code for s in found})
            if missing:
                raise click.ClickException(f"no site {', '.join(missing)}")
            site_ids = sorted(s.id for s in found if s.id is not None)
        export = odm.build(
            session=session,
            study=study,
            site_ids=site_ids,
            now=now,
            source_version=stepdown_version(),
        )
        odm.record_export(
            session=session,
            export=export,
            study=study,
            actor="cli",
            actor_user_id=None,
            via="cli",
            now=now,
        )
    if output:
        with open(output, "wb") as handle:
            handle.write(export.xml)
    else:
        sys.stdout.buffer.write(export.xml)
        sys.stdout.buffer.flush()
    click.echo(
        f"{study_key}: {export.subjects} subject(s), {export.study_events} study event(s), "
        f"{export.item_data} item(s), {export.audit_records} audit record(s)",
        err=True,
    )


@click.command("mllp")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=2575, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--site",
    "site_codes",
    multiple=True,
    help="attach results only to participants of these sites (repeatable; default: all)",
)
@with_appcontext
def mllp_command(host: str, port: int, site_codes: tuple[str, ...]) -> None:
    """Listen for HL7 v2 ORU^R01 lab results over MLLP and ACK each message (AA/AE/AR)."""
    from server.mllp import serve

    site_ids: list[int] | None = None
    if site_codes:
        with get_db().job_session() as session:
            found = session.exec(select(Site).where(col(Site.code).in_(site_codes))).all()
            missing = sorted(set(site_codes) - {s.code for s in found})
            if missing:
                raise click.ClickException(f"no site {', '.join(missing)}")
            site_ids = [s.id for s in found if s.id is not None]
    click.echo(f"MLLP listener on {host}:{port} (Ctrl-C stops it)")
    serve(current_app._get_current_object(), host, port, site_ids)  # type: ignore[attr-defined]


@click.command("scheduler")
@click.option("--once", is_flag=True, help="run every job and one dispatch pass, then exit")
@click.option("--no-dispatcher", is_flag=True, help="do not send SMS from this process")
@with_appcontext
def scheduler_command(once: bool, no_dispatcher: bool) -> None:
    """Run a scheduler process (with an SMS dispatcher unless --no-dispatcher). On PostgreSQL run
    two or more, on different machines: one leads, the others take over within seconds. On
    SQLite a second one refuses to start."""
    from server import messaging, processes, scheduler
    from server.leader import AnotherSchedulerRunning, SqliteLeader

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if once:
        database = get_db(app)
        single = None if database.is_postgresql else SqliteLeader(database.engine)
        try:
            if single is not None:
                single.acquire()
            for job_id, result in scheduler.run_all_once(app).items():
                click.echo(f"{job_id}: {result}")
            if not no_dispatcher:
                click.echo(f"dispatch: {messaging.build_dispatcher(app).run_once()}")
        except AnotherSchedulerRunning as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            if single is not None:
                single.release()
        return
    try:
        processes.serve_scheduler(app, with_dispatcher=not no_dispatcher, announce=click.echo)
    except AnotherSchedulerRunning as exc:
        raise click.ClickException(str(exc)) from None


@click.command("dispatcher")
@with_appcontext
def dispatcher_command() -> None:
    """Run an extra SMS dispatcher (PostgreSQL only: SQLite runs exactly one, in the scheduler)."""
    from server import processes

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not get_db(app).is_postgresql:
        raise click.UsageError("extra dispatchers need PostgreSQL; on SQLite the scheduler sends")
    processes.serve_dispatcher(app, announce=click.echo)


@click.command("status")
@with_appcontext
@click.option("--json", "as_json", is_flag=True, help="print the readiness and processes as JSON")
def status_command(as_json: bool) -> None:
    """Readiness (as GET /readyz decides it) and every scheduler and dispatcher heard from in
    the last day: leader or standby, last beat, last job results. Exits 1 when not ready."""
    import json

    from server.health import service as health

    with get_db().job_session() as session:
        report = health.status(session, utcnow())
        if as_json:
            click.echo(json.dumps(health.status_dict(report), indent=2))
        else:
            for line in health.status_lines(report):
                click.echo(line)
    if not report.readiness.is_ready:
        sys.exit(1)


def login_lines(session: Any) -> list[str]:
    """Each staff login with its role and sites ("admin@… — admin, PARIS-01 + BOSTON-01")."""
    from server.auth.models import SiteMembership

    sites = dict(session.exec(select(Site.id, Site.code)).all())
    memberships: dict[int, list[str]] = {}
    for user_id, site_id in session.exec(
        select(SiteMembership.user_id, SiteMembership.site_id).order_by(col(SiteMembership.site_id))
    ).all():
        memberships.setdefault(user_id, []).append(sites.get(site_id, "?"))
    users = session.exec(select(StaffUser).order_by(col(StaffUser.id))).all()
    width = max((len(u.email) for u in users), default=0)
    return [
        f"{u.email:<{width}}  {u.role.value}, {' + '.join(memberships.get(u.id, [])) or 'no site'}"
        for u in users
    ]


def _print_logins(emails: list[str]) -> None:
    click.echo(f"Demo logins (password for all: {DEMO_PASSWORD}):")
    for email in emails:
        click.echo(f"  {email}")


# Commands extensions add to every Flask CLI (Flask-Limiter's is an entry-point plugin): not
# Stepdown's, so `stepdown` neither lists nor runs them.
FOREIGN_COMMANDS = frozenset({"limiter", "routes", "shell"})


class StepdownGroup(FlaskGroup):
    """Flask's command group without the commands that are not Stepdown's."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n in super().list_commands(ctx) if n not in FOREIGN_COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return None if name in FOREIGN_COMMANDS else super().get_command(ctx, name)


def stepdown_version() -> str:
    """Stepdown's installed version (pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stepdown")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed)"


def build_cli() -> StepdownGroup:
    """The `stepdown` command: Stepdown's commands, Flask's `run` (kept on purpose: `make run`
    and the README use it) and flask-smorest's `openapi` (print or write the API document);
    not Flask's `routes`/`shell` nor its --app/--env-file/--debug options or version."""
    from flask.cli import run_command

    from server.app import create_app

    cli = StepdownGroup(
        create_app=lambda: create_app(),
        add_default_commands=False,
        add_version_option=False,
        help="Stepdown command line: the database, accounts, the demo, protocols, results, "
        "the scheduler and SMS dispatchers. `stepdown COMMAND --help` tells more.",
    )
    cli.params = [p for p in cli.params if p.name not in ("app", "env_file", "debug")]
    cli.add_command(run_command)
    click.version_option(
        stepdown_version(), "--version", prog_name="stepdown", message="%(prog)s %(version)s"
    )(cli)
    return cli


def main() -> None:
    """Entry point of the `stepdown` console script."""
    sys.exit(build_cli().main(prog_name="stepdown"))
