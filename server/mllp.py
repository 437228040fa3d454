"""The MLLP listener (`stepdown mllp`): HL7 v2 ORU^R01 lab results over a TCP connection.

MLLP frames each message as <VT> message <FS><CR> (0x0B … 0x1C 0x0D). An integration engine keeps
its connection open and sends one message at a time, waiting for each ACK; each message is one
transaction (server.results.hl7v2.receive): recorded and AA, or nothing recorded and AE/AR. MLLP
has no authentication of its own: bind it to an address only the integration engine reaches (a
VPN, or TLS terminated by stunnel in front), and restrict it to the sites it serves (`--site`).
"""

from __future__ import annotations

import logging
import socket
import socketserver
from collections.abc import Sequence
from typing import Any

from flask import Flask

from server.clock import utcnow
from server.db import get_db
from server.errors import DomainError
from server.results import hl7v2

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1024 * 1024  # as MAX_CONTENT_LENGTH on HTTP
IDLE_TIMEOUT_SECONDS = 300.0


def frame(text: str) -> bytes:
    """One message in MLLP's envelope."""
    return hl7v2.START_BLOCK + text.encode("utf-8") + hl7v2.END_BLOCK + hl7v2.CARRIAGE_RETURN


def handle_message(
    app: Flask, raw: bytes, *, actor: str, site_ids: Sequence[int] | None = None
) -> str:
    """One framed message's bytes in, its ACK out (one transaction; never raises)."""
    now = utcnow()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        error = hl7v2.Rejected("the message is not UTF-8 text", "102")
        return hl7v2.ack(code="AR", control_id="", now=now, error=error, hl7_error="102")
    with app.app_context():
        session = get_db(app).session()
        try:
            receipt = hl7v2.receive(
                session=session,
                text=text,
                now=now,
                actor=actor,
                site_ids=list(site_ids) if site_ids is not None else None,
                commit=session.commit,
            )
        except Exception:
            # A crash (the database gone): nothing was recorded; AE tells the sender to retry.
            log.exception("MLLP message failed")
            session.rollback()
            head = hl7v2.header_guess(text)
            crash = DomainError("internal error; the message was not recorded, send it again")
            return hl7v2.ack(code="AE", control_id=head.get("control_id", ""), now=now, error=crash)
        finally:
            session.close()
    if receipt.error is not None:
        log.info(
            "MLLP message %s: %s %s", receipt.control_id, receipt.ack_code, receipt.error.message
        )
    return receipt.ack


class _Handler(socketserver.BaseRequestHandler):
    server: MllpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(self.server.idle_timeout)
        peer = self.client_address[0] if self.client_address else "?"
        buffer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, OSError):
                return
            if not chunk:
                return
            buffer += chunk
            while True:
                start = buffer.find(hl7v2.START_BLOCK)
                if start < 0:
                    buffer = b""  # bytes outside any frame are noise
                    break
                end = buffer.find(hl7v2.END_BLOCK + hl7v2.CARRIAGE_RETURN, start)
                if end < 0:
                    buffer = buffer[start:]
                    if len(buffer) > MAX_MESSAGE_BYTES:
                        error = hl7v2.Rejected("the message is larger than 1 MiB", "102")
                        reply = hl7v2.ack(code="AR", control_id="", now=utcnow(), error=error)
                        sock.sendall(frame(reply))
                        return
                    break
                raw, buffer = buffer[start + 1 : end], buffer[end + 2 :]
                reply = handle_message(
                    self.server.app,
                    raw,
                    actor=f"hl7:mllp:{peer}"[:100],
                    site_ids=self.server.site_ids,
                )
                try:
                    sock.sendall(frame(reply))
                except OSError:
                    return


class MllpServer(socketserver.ThreadingTCPServer):
    """A threaded MLLP listener bound to an app (one thread per connection)."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(
        self,
        app: Flask,
        address: tuple[str, int],
        *,
        site_ids: Sequence[int] | None = None,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.site_ids = site_ids
        self.idle_timeout = idle_timeout
        super().__init__(address, _Handler)


def send(host: str, port: int, message: str, *, timeout: float = 10.0) -> str:
    """Send one message over MLLP and return the ACK's text (for tests and `--send`)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(frame(message))
        data = b""
        while not data.endswith(hl7v2.END_BLOCK + hl7v2.CARRIAGE_RETURN):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.strip(b"\x0b\x1c\r").decode("utf-8")


def serve(app: Flask, host: str, port: int, site_ids: Sequence[int] | None = None) -> Any:
    """Listen until interrupted."""
    with MllpServer(app, (host, port), site_ids=site_ids) as server:
        log.info("MLLP listener on %s:%s", host, port)
        server.serve_forever()
