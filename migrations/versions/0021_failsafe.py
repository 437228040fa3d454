"""the fail-safe: a site's designated fail-safe and when an alert reached it

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04 23:00:00.000000+00:00

Issue 16 item 3. A site names its fail-safe (a role and/or a phone number) before it can enrol;
an alert records when it reached it (once). Sites that exist already keep enrolling: their
fail-safe is their investigators until an admin sets another.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel.sql.sqltypes types)
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("site", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("failsafe_role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "failsafe_phone_e164", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True
            )
        )
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("failsafe_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    op.execute("UPDATE site SET failsafe_role = 'investigator' WHERE failsafe_role IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_column("failsafe_at")
    with op.batch_alter_table("site", schema=None) as batch_op:
        batch_op.drop_column("failsafe_phone_e164")
        batch_op.drop_column("failsafe_role")
