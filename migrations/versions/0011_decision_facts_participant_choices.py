"""decision fact sources and participant choices

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 10:00:00.000000+00:00

A decision keeps each fact it used with its sources (result, accession, draw, date); decisions
opened before this revision have none (NULL). A participant's values for the choices a protocol
leaves to the care team (STOP-HER2's imaging interval after year one, the scan method) get one
row per participant and choice; no row means the protocol's default.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel.sql.sqltypes types)
from alembic import op


revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fact_sources", sa.JSON(), nullable=True))

    op.create_table(
        "participant_choice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("choice_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("value", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("set_by_user_id", sa.Integer(), nullable=True),
        sa.Column("set_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["participant_id"], ["participant.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["set_by_user_id"], ["staff_user.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("participant_id", "choice_key", name="uq_participant_choice_key"),
    )


def downgrade() -> None:
    op.drop_table("participant_choice")
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.drop_column("fact_sources")
