"""fhir subscriptions and their notifications

Revision ID: 0018
Revises: 0012
Create Date: 2026-12-04 21:50:05.666212+00:00

FHIR Subscriptions (R4 Backport, rest-hook): a site's endpoints, and the notifications queued
for them with their delivery state (a lane of their own, apart from the SMS outbox).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel.sql.sqltypes types)
from alembic import op


revision: str = "0018"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fhir_subscription",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column(
            "topic",
            sa.Enum("alert", "result", name="topic", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("endpoint", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("secret", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column(
            "payload",
            sa.Enum("id-only", "empty", name="payloadcontent", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("heartbeat_seconds", sa.Integer(), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "requested",
                "active",
                "error",
                "off",
                name="subscriptionstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("events_since_start", sa.Integer(), nullable=False),
        sa.Column("failure_count", sa.Integer(), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("last_failure_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_delivered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("ended_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"],
            ["staff_user.id"],
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["site.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("fhir_subscription", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fhir_subscription_site_id"), ["site_id"], unique=False)

    op.create_table(
        "fhir_notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "handshake",
                "heartbeat",
                "event-notification",
                name="notificationtype",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("event_number", sa.Integer(), nullable=False),
        sa.Column("focus", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
        sa.Column("event_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "delivered",
                "failed",
                "cancelled",
                name="deliverystatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("delivered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["fhir_subscription.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription_id", "focus", name="uq_fhir_notification_focus"),
    )
    with op.batch_alter_table("fhir_notification", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_notification_due", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_fhir_notification_subscription_id"), ["subscription_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("fhir_notification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_notification_subscription_id"))
        batch_op.drop_index("ix_fhir_notification_due")

    op.drop_table("fhir_notification")
    with op.batch_alter_table("fhir_subscription", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_subscription_site_id"))

    op.drop_table("fhir_subscription")
