"""alert levels

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 10:00:00.000000+00:00

An alert's `severity` (critical / high / normal) becomes its `level` (critical / urgent /
routine), which now decides how it reaches people (server/alerts/rules.py): high was the
questionnaire answers (now urgent), normal the follow-up work (now routine tasks). Routine alerts
no longer escalate, so an open one keeps no next tier.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = sa.Enum("critical", "high", "normal", name="severity", native_enum=False, length=32)
NEW = sa.Enum("critical", "urgent", "routine", name="level", native_enum=False, length=32)
TO_LEVEL = {"critical": "critical", "high": "urgent", "normal": "routine"}


def _map(column: str, mapping: dict[str, str]) -> None:
    alert = sa.table("alert", sa.column(column, sa.String()))
    for old, new in mapping.items():
        if old != new:
            op.execute(alert.update().where(alert.c[column] == old).values({column: new}))


def upgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.alter_column(
            "severity", new_column_name="level", existing_type=OLD, type_=NEW, nullable=False
        )
    _map("level", TO_LEVEL)
    alert = sa.table("alert", sa.column("level", sa.String()), sa.column("next_tier_at"))
    op.execute(alert.update().where(alert.c.level == "routine").values(next_tier_at=None))


def downgrade() -> None:
    _map("level", {new: old for old, new in TO_LEVEL.items()})
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.alter_column(
            "level", new_column_name="severity", existing_type=NEW, type_=OLD, nullable=False
        )
