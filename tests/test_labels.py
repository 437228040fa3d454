"""One label table for the pages: every value of every enum a page shows, every audit action and
every alert timeline entry the code writes has a human label, so none reaches a page as a key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server import labels
from server.alerts.models import AlertKind, Level

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("enum_cls", list(labels.ENUM_TABLES), ids=lambda c: c.__name__)
def test_every_member_of_every_enum_has_a_label(enum_cls):
    table = labels.TABLES[labels.ENUM_TABLES[enum_cls]]
    missing = [m.value for m in enum_cls if m not in table and m.value not in table]
    assert not missing, f"{enum_cls.__name__}: no label for {missing}"
    for member in enum_cls:
        assert labels.label(member) == table[member]


def _source() -> str:
    files = [*(ROOT / "server").rglob("*.py"), *(ROOT / "api").rglob("*.py")]
    return "\n".join(p.read_text("utf-8") for p in files)


def test_every_audit_action_written_has_a_label():
    source = _source()
    actions = set(re.findall(r'action="([a-z_]+\.[a-z_]+)"', source))
    actions |= set(re.findall(r'_ACTION = "([a-z_]+\.[a-z_]+)"', source))
    # event.<what>, from the schedules service's _event_changed(..., "<what>", ...)
    schedules = (ROOT / "server/schedules/service.py").read_text("utf-8")
    actions |= {
        f"event.{w}" for w in re.findall(r'_event_changed\([^)]*?"([a-z_]+)",', schedules, re.S)
    }
    assert {"alert.acknowledge", "event.complete", "participant.create"} <= actions
    missing = sorted(actions - set(labels.AUDIT_ACTION))
    assert not missing, f"audit actions without a label: {missing}"


def test_every_alert_timeline_entry_has_a_label():
    service = (ROOT / "server/alerts/service.py").read_text("utf-8")
    whats = set(re.findall(r'\blog\(\s*session,\s*\w+,\s*"([a-z_]+)"', service))
    assert {"opened", "tier_notified", "acknowledged", "resolved"} <= whats
    assert not sorted(whats - set(labels.ALERT_LOG))


@pytest.mark.parametrize(
    ("value", "table", "expected"),
    [
        (AlertKind.CTDNA_POSITIVE, None, "ctDNA turned positive"),
        (Level.ROUTINE, None, "Routine"),
        ("alert_new", "message_kind", "Critical alert"),
        ("alert_new", None, "Critical alert"),
        ("ct_or_mri", None, "CT or MRI"),
        ("tier_notified", "alert_log", "SMS queued"),
        ("after_year_1", None, "after year 1"),  # no table knows it: plain words
        (None, None, ""),
    ],
)
def test_label(value, table, expected):
    assert labels.label(value, table) == expected


def test_actors_are_named():
    names = {3: "Claire Martin"}
    assert labels.actor("staff:3", names) == "Claire Martin"
    assert labels.actor("staff:9", names) == "a former staff member"
    assert labels.actor("staff:9", names, user_id=3) == "Claire Martin"
    assert labels.actor("system:rules", names) == "Stepdown (protocol rules)"
    assert labels.actor("participant:12", names) == "The participant"
    assert labels.actor("cli:import:natera", names) == "Lab import (natera)"
    assert labels.staff_ids(["staff:3", "system:rules", None, "staff:x"]) == {3}


def test_event_keys_read_as_the_protocols_labels():
    items = {"ctdna_baseline": "Baseline Signatera ctDNA draw", "ctdna": "Signatera ctDNA draw"}
    assert labels.event_key("ctdna_baseline:1", items) == "Baseline Signatera ctDNA draw #1"
    assert labels.event_key("ctdna:3:redraw1", items) == "Signatera ctDNA draw #3, redraw 1"
    assert labels.event_key("unknown:2", items) == "unknown:2"
