"""eligibility facts (entry gates)

Revision ID: 0020
Revises: 0018
Create Date: 2026-12-04 22:00:00.000000+00:00

Issue 17: a protocol's entry gate decides who enters monitoring. Each participant's gate facts
(and the confirmed stop date) are recorded once, with their provenance (a result, an event's
completion, or a person's attestation with its date). The participant status gains
continues_maintenance, a plain VARCHAR value (no constraint to change).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel.sql.sqltypes types)
from alembic import op

revision: str = "0020"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "eligibility_fact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("fact_key", sqlmodel.sql.sqltypes.AutoString(length=48), nullable=False),
        sa.Column("value", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("provenance", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=True),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("observed_on", sa.Date(), nullable=True),
        sa.Column("attested_by_user_id", sa.Integer(), nullable=True),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("recorded_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["attested_by_user_id"], ["staff_user.id"]),
        sa.ForeignKeyConstraint(["event_id"], ["schedule_event.id"]),
        sa.ForeignKeyConstraint(["participant_id"], ["participant.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["result_id"], ["lab_result.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("participant_id", "fact_key", name="uq_eligibility_fact_key"),
    )


def downgrade() -> None:
    op.drop_table("eligibility_fact")
