"""secret calendar subscription links for on-call shifts

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05 01:30:00.000000+00:00

Issue 16 item 1: a calendar app cannot log in, so each staff user may hold one secret link to
their on-call shifts (GET /oncall/feed/<token>.ics). Only the SHA-256 of the token is stored, in a
table of its own rather than a column of staff_user: every read, listing and audit snapshot of a
user then stays free of it, and the unique index on the hash is the feed's lookup.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel.sql.sqltypes types)
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oncall_calendar_link",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["staff_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
        sa.UniqueConstraint("user_id"),
    )


def downgrade() -> None:
    op.drop_table("oncall_calendar_link")
