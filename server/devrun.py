"""`make run`: the fake Twilio, the scheduler (with the dispatcher) and the web server side by
side, stopped together on Ctrl-C or SIGTERM (no process is left behind)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


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
    children = [subprocess.Popen(c, env=env) for c in commands]  # noqa: S603 - our own commands
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
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


if __name__ == "__main__":
    sys.exit(main())
