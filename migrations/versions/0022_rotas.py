"""on-call rotas and their overrides; voice calls of alert tiers

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 23:10:00.000000+00:00

Issue 16 item 1: one rota per site and layer (primary, backup) with daily or weekly shifts
handed over at a site wall-clock time, and overrides (a day off, a holiday). Issue 16 item 2:
the voice calls of alert tiers (Twilio Programmable Voice, keypad 1 acknowledges).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel.sql.sqltypes types)
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rota",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("layer", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("handover", sqlmodel.sql.sqltypes.AutoString(length=5), nullable=False),
        sa.Column("handover_weekday", sa.Integer(), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["site.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id", "layer", name="uq_rota_site_layer"),
    )
    with op.batch_alter_table("rota", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rota_site_id"), ["site_id"], unique=False)

    op.create_table(
        "rota_override",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rota_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("ends_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"],
            ["staff_user.id"],
        ),
        sa.ForeignKeyConstraint(
            ["rota_id"],
            ["rota.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["staff_user.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rota_override", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rota_override_rota_id"), ["rota_id"], unique=False)

    op.create_table(
        "voice_call",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("staff_user_id", sa.Integer(), nullable=True),
        sa.Column("to_e164", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("locale", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("due_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("call_sid", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("placed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("ended_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alert.id"],
        ),
        sa.ForeignKeyConstraint(
            ["staff_user_id"],
            ["staff_user.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    with op.batch_alter_table("voice_call", schema=None) as batch_op:
        batch_op.create_index("ix_voice_call_due", ["status", "due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_voice_call_alert_id"), ["alert_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("voice_call", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_voice_call_alert_id"))
        batch_op.drop_index("ix_voice_call_due")
    op.drop_table("voice_call")
    with op.batch_alter_table("rota_override", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rota_override_rota_id"))
    op.drop_table("rota_override")
    with op.batch_alter_table("rota", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rota_site_id"))
    op.drop_table("rota")
