"""process heartbeats and the scheduler leader's lease

Revision ID: 0015
Revises: 0011
Create Date: 2026-12-07 09:00:00.000000+00:00

Every scheduler and dispatcher process writes a heartbeat row (readiness, the status page, the
stale-scheduler banner); the schedulers elect a leader with a PostgreSQL advisory lock and record
its epoch in `leader_lease`, which every job transaction checks before it commits.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel.sql.sqltypes types)
from alembic import op


revision: str = "0015"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "process_heartbeat",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "scheduler",
                "dispatcher",
                name="processrole",
                native_enum=False,
                create_constraint=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("app_name", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("is_leader", sa.Boolean(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("beat", sa.Integer(), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("last_beat_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("leader_since_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_tick_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_results", sa.JSON(), nullable=True),
        sa.Column("stopped_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("process_heartbeat", schema=None) as batch_op:
        batch_op.create_index(
            "ix_process_heartbeat_role_beat", ["role", "last_beat_at"], unique=False
        )

    op.create_table(
        "leader_lease",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("holder_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("acquired_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    # The row a leader's jobs lock FOR SHARE before they commit: it always exists.
    lease = sa.table(
        "leader_lease", sa.column("name", sa.String()), sa.column("epoch", sa.Integer())
    )
    op.bulk_insert(lease, [{"name": "scheduler", "epoch": 0}])


def downgrade() -> None:
    op.drop_table("leader_lease")
    with op.batch_alter_table("process_heartbeat", schema=None) as batch_op:
        batch_op.drop_index("ix_process_heartbeat_role_beat")
    op.drop_table("process_heartbeat")
