"""sms sender rate: one send rate per sender shared by every dispatcher (PostgreSQL)

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-06 10:00:00.000000+00:00

One row per sender (a phone number or a Messaging Service SID): the earliest moment its next
send may start and until when that slot is kept for a staff alert, in seconds on the database
server's clock (notifications/ratelimit.py). Used only when REDIS_URL is not set; on SQLite the
single sending process keeps the slots in memory and the table stays empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel.sql.sqltypes types)
from alembic import op


revision: str = "0016"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sms_sender_rate",
        sa.Column("sender", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.Column("hold_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("sender"),
    )


def downgrade() -> None:
    op.drop_table("sms_sender_rate")
