"""Protocol registry and versions.

The files in config/protocols/ are loaded (and validated) when the app is built: a broken file stops
the app with a message naming the file and the field. Each version used is snapshotted in
`protocol_version`, so a participant on version 1 keeps following version 1 after version 2 is
loaded, until they are moved to it (an amendment).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlmodel import Session, select

from config.settings import PROTOCOLS_DIR
from server.errors import Conflict, NotFound
from server.protocols.definition import Protocol, load_all
from server.protocols.models import ProtocolVersion, Study


def init_app(app: Flask) -> None:
    """Load every protocol file; raises ProtocolError on a bad one."""
    app.extensions["protocols"] = load_all(app.config["PROTOCOLS_DIR"])


@functools.cache
def _default_registry() -> dict[str, Protocol]:
    return load_all(PROTOCOLS_DIR)


def current_protocols() -> dict[str, Protocol]:
    """The protocols as loaded by the app (outside an app: the files in config/protocols/)."""
    if has_app_context():
        return current_app.extensions["protocols"]  # type: ignore[no-any-return]
    return _default_registry()


def find_protocol(key_or_study: str) -> Protocol:
    """A current protocol by its key (file name) or its study key, case-insensitive."""
    wanted = key_or_study.strip().lower()
    for key, protocol in current_protocols().items():
        if key.lower() == wanted or protocol.study.lower() == wanted:
            return protocol
    raise NotFound(f"no protocol {key_or_study!r}")


def record_version(*, session: Session, protocol: Protocol, now: datetime) -> ProtocolVersion:
    """Snapshot a protocol version (idempotent). Changing a recorded version in place is refused:
    an amendment needs a new version number."""
    row = session.exec(
        select(ProtocolVersion).where(
            ProtocolVersion.protocol_key == protocol.key,
            ProtocolVersion.version == protocol.version,
        )
    ).first()
    if row is not None:
        if row.sha256 != protocol.sha256:
            raise Conflict(
                f"{protocol.source_file}: version {protocol.version} is already recorded with "
                "different content; give the amendment a new version number"
            )
        return row
    row = ProtocolVersion(
        protocol_key=protocol.key,
        version=protocol.version,
        sha256=protocol.sha256,
        definition=protocol.definition(),
        source_file=protocol.source_file,
        loaded_at=now,
    )
    session.add(row)
    session.flush()
    return row


@functools.lru_cache(maxsize=64)
def _from_snapshot(key: str, sha256: str, frozen: str) -> Protocol:
    import json

    protocol = Protocol.model_validate(json.loads(frozen))
    return protocol.model_copy(update={"key": key, "sha256": sha256})


def protocol_version(*, session: Session, protocol_key: str, version: str) -> Protocol:
    """A recorded protocol version (the current file if it is that version)."""
    current = current_protocols().get(protocol_key)
    if current is not None and current.version == version:
        return current
    row = session.exec(
        select(ProtocolVersion).where(
            ProtocolVersion.protocol_key == protocol_key, ProtocolVersion.version == version
        )
    ).first()
    if row is None:
        raise NotFound(f"protocol {protocol_key} version {version} was never loaded")
    import json

    return _from_snapshot(protocol_key, row.sha256, json.dumps(row.definition, sort_keys=True))


def protocol_of_study(session: Session, study_id: int) -> tuple[Study, Protocol]:
    """A study and its current protocol."""
    study = session.get(Study, study_id)
    if study is None:
        raise NotFound("study not found")
    protocol = current_protocols().get(study.protocol_key)
    if protocol is None:
        raise NotFound(f"study {study.key} names protocol {study.protocol_key!r}, which is absent")
    return study, protocol


def summary(protocol: Protocol) -> dict[str, Any]:
    """A short description of a protocol for lists."""
    return {
        "key": protocol.key,
        "study": protocol.study,
        "title": protocol.title,
        "version": protocol.version,
        "locale": protocol.locale.value,
        "time_zone": protocol.time_zone,
        "cohorts": [{"key": c.key, "label": c.label} for c in protocol.cohorts],
        "rules": [r.value for r in protocol.rules],
        "identifiers": protocol.identifiers,
    }
