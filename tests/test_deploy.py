"""The deployment files the project ships (config/deploy/): every systemd unit parses, runs a
command that exists here with options it accepts, and reads the one environment file, whose
settings are all settings Stepdown knows."""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from flask import Flask
from flask.cli import FlaskGroup, ScriptInfo

from config import settings

DEPLOY = Path(__file__).resolve().parent.parent / "config" / "deploy"
INSTALL = "/opt/stepdown"
VENV_BIN = Path(sys.executable).parent
UNITS = sorted(DEPLOY.glob("*.service"))


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: {section: {key: [values]}} (comments, continuations, repeats)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}:{number}: a setting outside any section"
        key, sep, value = line.partition("=")
        assert sep and key.strip() == key and key, f"{path.name}:{number}: not key=value"
        current.setdefault(key, []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, (section, key, values)
    return values[0]


@functools.cache
def gunicorn_flags() -> set[str]:
    out = subprocess.run(
        [str(VENV_BIN / "gunicorn"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    return set(re.findall(r"(?<![\w-])(-{1,2}[a-z][\w-]*)", out))


def check_stepdown(app: Flask, args: list[str]) -> None:
    """The subcommand exists and takes these options (parsed as the CLI parses them, not run)."""
    cli = FlaskGroup(create_app=lambda: app)
    with contextlib.ExitStack() as contexts:  # closing them pops the app context Flask pushed
        ctx = contexts.enter_context(
            click.Context(cli, info_name="stepdown", obj=ScriptInfo(create_app=lambda: app))
        )
        command: click.Command = cli
        rest = list(args)
        name = "stepdown"
        while isinstance(command, click.Group):
            assert rest, f"`stepdown {' '.join(args)}` names a group, not a command"
            name = rest.pop(0)
            found = command.get_command(ctx, name)
            assert found is not None, f"stepdown has no command {' '.join(args)}"
            command = found
            if isinstance(command, click.Group):
                ctx = contexts.enter_context(click.Context(command, info_name=name, parent=ctx))
        # Unknown options raise here.
        contexts.enter_context(command.make_context(name, rest, parent=ctx))


def check_gunicorn(argv: list[str]) -> None:
    known = gunicorn_flags()
    target = None
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            flag = arg.split("=", 1)[0]
            assert flag in known, f"gunicorn has no option {flag}"
            skip = "=" not in arg and flag not in {"--no-control-socket"}
            continue
        target = arg
    assert target is not None, "gunicorn needs the app"
    module, _, call = target.partition(":")
    factory = getattr(importlib.import_module(module), call.removesuffix("()"))
    assert callable(factory)


@pytest.mark.parametrize("path", UNITS, ids=[p.name for p in UNITS])
def test_every_unit_runs_a_command_that_exists_here(path: Path, app: Flask) -> None:
    unit = parse_unit(path)
    assert set(unit) >= {"Unit", "Service"}
    service = unit["Service"]
    assert one(unit, "Service", "WorkingDirectory") == INSTALL
    assert one(unit, "Service", "EnvironmentFile") == "/etc/stepdown/stepdown.env"
    assert one(unit, "Service", "User") == "stepdown"
    argv = shlex.split(one(unit, "Service", "ExecStart"))
    program = Path(argv[0])
    assert program.parent == Path(INSTALL, ".venv", "bin"), argv[0]
    assert (VENV_BIN / program.name).exists(), f"{program.name} is not installed by `make setup`"
    if program.name == "stepdown":
        check_stepdown(app, argv[1:])
    elif program.name == "gunicorn":
        check_gunicorn(argv[1:])
    else:
        raise AssertionError(f"unexpected program {program}")
    if one(unit, "Service", "Type") == "oneshot":
        assert "Restart" not in service
    else:
        # A long-running piece comes back by itself, and is started at boot.
        assert one(unit, "Service", "Restart") == "always"
        assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_the_pieces_the_readme_names_are_all_there() -> None:
    commands = {p.name: one(parse_unit(p), "Service", "ExecStart") for p in UNITS}
    assert "gunicorn" in commands["stepdown-web.service"]
    assert commands["stepdown-scheduler.service"].endswith("stepdown scheduler --no-dispatcher")
    assert commands["stepdown-dispatcher@.service"].endswith("stepdown dispatcher")
    assert "%i" in parse_unit(DEPLOY / "stepdown-dispatcher@.service")["Unit"]["Description"][0]
    assert commands["stepdown-migrate.service"].endswith("stepdown db upgrade")
    readme = (DEPLOY.parent.parent / "README.md").read_text()
    for name in commands:
        assert name in readme, f"README does not mention {name}"


def test_the_example_environment_names_only_settings_stepdown_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = {name for name in dir(settings.BaseConfig) if name.isupper()} | {"STEPDOWN_ENV"}
    values = {}
    for line in (DEPLOY / "stepdown.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and value, line
            values[key] = value
    assert set(values) <= known, set(values) - known
    # Production's own checks pass on it (secrets, https, Redis for the shared limits).
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    config = settings.load_config()
    assert config.ENV_NAME == "production"
    assert values["DATABASE_URL"] == config.DATABASE_URL
    assert values["HEARTBEAT_URL"] == config.HEARTBEAT_URL


def test_the_checks_refuse_a_command_or_option_that_does_not_exist(app: Flask) -> None:
    with pytest.raises(click.NoSuchOption):
        check_stepdown(app, ["scheduler", "--no-such-option"])
    with pytest.raises(AssertionError, match="no command"):
        check_stepdown(app, ["schedular"])
    with pytest.raises(AssertionError, match="names a group"):
        check_stepdown(app, ["db"])
    with pytest.raises(AssertionError, match="no option"):
        check_gunicorn(["--workerz", "4", "server.app:create_app()"])
    with pytest.raises(AttributeError):
        check_gunicorn(["server.app:build_app()"])
