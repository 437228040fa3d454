"""`stepdown instruments`: which questionnaires can be shown in which language, and loading a
site's licensed wording (server/surveys/texts.py describes the file)."""

from __future__ import annotations

import getpass
from pathlib import Path

import click
from flask.cli import AppGroup

from server.clock import utcnow
from server.db import get_db
from server.surveys import texts
from server.surveys.definition import Instrument
from server.surveys.registry import instruments

LOCALES = click.Choice(["en", "fr", "zh"])


@click.group("instruments", cls=AppGroup, help="Questionnaires: their texts per language.")
def instruments_group() -> None:
    pass


def find_instrument(name: str) -> Instrument:
    """An installed instrument by key, with dashes for underscores, or by the end of its key
    (`qlq-c30` is eortc_qlq_c30); anything else lists the keys."""
    known = instruments()
    wanted = name.strip().lower().replace("-", "_")
    if wanted in known:
        return known[wanted]
    ending = [key for key in known if key.endswith("_" + wanted)]
    if len(ending) == 1:
        return known[ending[0]]
    raise click.UsageError(f"no instrument {name!r} (installed: {', '.join(sorted(known))})")


@instruments_group.command("list")
def instruments_list() -> None:
    """Every instrument in every language: shown as is, with the site's text, or waiting."""
    with get_db().job_session() as session:
        rows = texts.status(session)
    for row in rows:
        if row.problem:
            state = f"WAITS: {row.problem}"
        elif row.version is None:
            state = "ready (the instrument file's own wording)"
        else:
            loaded = row.loaded_at.strftime("%Y-%m-%d %H:%M UTC") if row.loaded_at else "?"
            state = (
                f"ready: text version {row.version}, loaded {loaded} by {row.loaded_by} "
                f"(sha256 {(row.sha256 or '')[:12]}…)"
            )
        if row.problem and row.version is not None:
            state += f" [text version {row.version}]"
        click.echo(f"{row.instrument:<16} {row.locale}  {state}")


@instruments_group.command("load-text")
@click.argument("instrument")
@click.option("--locale", type=LOCALES, required=True, help="the language of the file")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--by", default=None, help="who loads it, for the audit trail (default: OS user)")
@click.option("--reason", default=None, help="why (goes in the audit trail)")
def load_text(instrument: str, locale: str, path: Path, by: str | None, reason: str | None) -> None:
    """Load an instrument's item and answer texts in one language from the site's licensed copy
    (a YAML file: `text-template` prints one to fill in). Checked against the instrument (every
    item, no unknown id, answer labels that fit its scales); a later load replaces it as a new
    version. The text is stored in the database, audited by its SHA-256, never printed."""
    found = find_instrument(instrument)
    raw = path.read_bytes()
    actor = f"cli:{by or getpass.getuser()}"
    with get_db().job_session() as session:
        try:
            row = texts.load_text(
                session=session,
                instrument=found,
                locale=locale,
                raw=raw,
                source_file=path.name,
                actor=actor,
                now=utcnow(),
                reason=reason,
            )
        except texts.TextError as exc:
            for place, problem in exc.problems:
                click.echo(f"{path.name}: {place}: {problem}", err=True)
            raise click.ClickException(
                f"{len(exc.problems)} problem(s); nothing loaded ({found.key}, {locale})"
            ) from None
        version, items, headings = row.version, len(row.content["items"]), row.content["headings"]
        digest = row.sha256
    replaced = f"; replaces version {version - 1}" if version > 1 else ""
    click.echo(
        f"loaded {found.key} {locale} text version {version}: {items} items, "
        f"{len(headings)} heading(s), sha256 {digest[:12]}…{replaced}"
    )
    click.echo(
        "Questionnaires waiting for it are offered from now on; their reminders go out at the "
        "scheduler's next run."
    )


@instruments_group.command("text-template")
@click.argument("instrument")
@click.option("--locale", type=LOCALES, required=True)
def text_template(instrument: str, locale: str) -> None:
    """Print a text file to fill in for `load-text`: every item id and answer set (with the
    instrument's own wording where it has some; never a licensed text)."""
    click.echo(texts.template(find_instrument(instrument), locale), nl=False)
