"""schedule event next reminder moment

Revision ID: 0012
Revises: 0016
Create Date: 2026-12-07 12:00:00.000000+00:00

The reminder job becomes incremental: each pending event carries the send moment of its next
reminder not yet written, indexed with its status, and a tick reads only the events whose moment
has come within its horizon. Existing pending events get their creation time: the first tick after
the upgrade looks at each of them once (writing nothing it wrote before: the outbox's dedupe keys)
and sets the real value.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel.sql.sqltypes types)
from alembic import op


revision: str = "0012"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("schedule_event", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("next_reminder_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.create_index(
            "ix_schedule_event_status_next_reminder",
            ["status", "next_reminder_at"],
            unique=False,
        )
    op.execute(
        "UPDATE schedule_event SET next_reminder_at = created_at "
        "WHERE status IN ('planned', 'open')"
    )


def downgrade() -> None:
    with op.batch_alter_table("schedule_event", schema=None) as batch_op:
        batch_op.drop_index("ix_schedule_event_status_next_reminder")
        batch_op.drop_column("next_reminder_at")
