"""`make run`: the fake Twilio, the scheduler (with the dispatcher) and the web server side by
side, stopped together on Ctrl-C or SIGTERM (no process is left behind). Once the web server
answers, the URLs and the demo logins are printed last, where a new user looks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

# Access-log lines of routine successes that would bury the banner: the fake Twilio's delivery
# callbacks (two per SMS) and health checks. Failures and every other request still show.
_ANSI = r"(?:\x1b\[[0-9;]*m)*"  # werkzeug colours its access lines on a terminal
ROUTINE = re.compile(
    rf'"{_ANSI}(?:POST /twilio/status/\d+|GET /(?:healthz|readyz)) HTTP/[\d.]+{_ANSI}" 2\d\d '
)


def main() -> int:
    """Start the three processes and wait; stop them all when one stops or on a signal."""
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    fake_port = os.environ.get("FAKE_TWILIO_PORT", "8010")
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "TWILIO_BASE_URL": f"http://{host}:{fake_port}",
        "PUBLIC_BASE_URL": os.environ.get("PUBLIC_BASE_URL", f"http://{host}:{port}"),
        # Their output goes through our pipe: line by line, not in 8 KB blocks.
        "PYTHONUNBUFFERED": "1",
    }
    commands = [
        [
            sys.executable,
            "-m",
            "notifications.fake_twilio",
            "--host",
            host,
            "--port",
            fake_port,
            "--callback-delay",
            "0.5",
        ],
        [str(bin_dir / "stepdown"), "scheduler"],
        [str(bin_dir / "stepdown"), "run", "--host", host, "--port", port],
    ]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    children = [
        subprocess.Popen(  # noqa: S603 - our own commands
            c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for c in commands
    ]
    for child in children:
        threading.Thread(target=_relay, args=(child,), daemon=True).start()
    base = f"http://{host}:{port}"
    try:
        if _wait_until_up(f"{base}/healthz", children, lambda: stopping):
            print(banner(base, f"http://{host}:{fake_port}", _demo_logins()), flush=True)
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.3)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 10
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def _relay(child: subprocess.Popen[str]) -> None:
    """Copy a child's output to ours, without the routine access-log lines."""
    assert child.stdout is not None
    for line in child.stdout:
        if not ROUTINE.search(line):
            sys.stdout.write(line)
            sys.stdout.flush()


def _wait_until_up(
    url: str,
    children: list[subprocess.Popen[str]],
    stopping: Callable[[], bool],
    timeout: float = 60,
) -> bool:
    """Wait for the web server to answer (False if a process died, we are stopping, or it took
    too long)."""
    deadline = time.monotonic() + timeout
    while (
        time.monotonic() < deadline and not stopping() and all(c.poll() is None for c in children)
    ):
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - our own URL
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _demo_logins() -> list[str]:
    """The staff logins of this database, with role and sites (empty if it cannot tell)."""
    try:
        from server.app import create_app
        from server.cli import login_lines
        from server.db import get_db

        app = create_app()
        with app.app_context(), get_db(app).job_session() as session:
            return login_lines(session)
    except Exception:  # the banner must never stop `make run`
        return []


def banner(base: str, fake: str, logins: list[str]) -> str:
    """What `make run` prints once everything is up: where to go and who to log in as."""
    from server.demo import DEMO_PASSWORD

    rule = "─" * 78
    lines = [
        "",
        rule,
        "Stepdown is running (Ctrl-C stops the web server, the scheduler and the fake Twilio)",
        "",
        f"  Staff pages     {base}/login",
        f"  API reference   {base}/api/docs",
        f"  Fake Twilio     {fake}/_fake/   every SMS Stepdown sent (survey links open from there)",
    ]
    if logins:
        lines += ["", f"  Demo logins (password for all: {DEMO_PASSWORD}):"]
        lines += [f"    {line}" for line in logins]
    lines += [rule, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
