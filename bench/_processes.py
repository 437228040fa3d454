"""What the multi-process benchmarks (failover.py, alert_latency.py) share: child processes in
their own sessions, all stopped on exit; waiting on a condition with the children's last log lines
when it never comes; signals turned into exceptions so `finally` blocks run; the `stepdown`
command; small printing and time helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(message, flush=True)


def utc(moment: datetime) -> datetime:
    """SQLite gives naive datetimes (stored as UTC); PostgreSQL aware ones."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def load_average(*, cpus: bool = False) -> str:
    """The machine's load average, for the figures' context (and its CPU count, if asked)."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    on = f" on {os.cpu_count()} CPUs" if cpus else ""
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min){on}"


def exit_cleanly_on_signals() -> None:
    """SIGTERM and SIGHUP become SystemExit and SIGINT KeyboardInterrupt (even when the shell
    started us with SIGINT ignored), so the `finally` blocks stop the child processes and drop
    the scratch database."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        print(f"signal {signum}: stopping", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def stepdown_command() -> list[str]:
    """The `stepdown` command of this virtualenv."""
    script = Path(sys.executable).parent / "stepdown"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from server.cli import main; main()"]


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with status {self.popen.returncode}:\n{self.tail()}"
            )

    def kill9(self) -> None:
        """SIGKILL to the process (and its group): no `finally`, no goodbye."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


class Children:
    """Child processes, each in its own session (process group), all stopped on exit: SIGTERM
    to the group, then SIGKILL to whatever is left; nothing is left behind."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = self.logdir / f"{name}.log"
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, popen, log_path)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            self._stop(child)
        self.children.clear()

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _stop(self, child: Child) -> None:
        pgid = child.popen.pid  # start_new_session: the child leads its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            child.popen.poll()
            if child.popen.returncode is not None and not self._group_alive(pgid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        child.popen.wait(timeout=5)
        log(f"{child.name}: did not stop on SIGTERM within 10 s; killed")

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_for(
    what: str,
    predicate: Callable[[], Any],
    children: Sequence[Child],
    timeout: float,
    *,
    fail_on_exit: bool = True,
    poll: float = 0.05,
) -> Any:
    """Poll predicate() until it returns something truthy; fail early if a child died (unless
    `fail_on_exit` is off: a bench that kills children on purpose); on timeout, the children's
    last log lines."""
    deadline = time.monotonic() + timeout
    while True:
        if fail_on_exit:
            for child in children:
                child.check_alive()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"  {c.name}:\n{c.tail()}" for c in children)
            raise RuntimeError(f"timed out waiting for {what}\n{tails}")
        time.sleep(poll)
