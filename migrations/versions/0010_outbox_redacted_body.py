"""outbox redacted body: what staff may see of a message that carries a bearer secret

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 18:40:00.000000+00:00

Rows written before this revision kept activation codes, survey links and acknowledgement codes in
clear in `body`. Their exact texts cannot be rebuilt here, so each gets a whole-text marker as its
redacted copy, and the ones already sent or final are scrubbed now (pending ones still need their
text to go out; the outbox scrubs them when they leave `pending`/`sending`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel.sql.sqltypes types)
from alembic import op


revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEGACY_MARKER = "[text hidden: it carried a code or a link]"
ALWAYS_SECRET = ("activation_code", "alert_new", "alert_escalated", "alert_bundle")
SECRET_IF_LINK = ("reminder_questionnaire", "welcome")
OPEN = ("pending", "sending")


def upgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("redacted_body", sqlmodel.sql.sqltypes.AutoString(length=1600), nullable=True)
        )

    outbox = sa.table(
        "outbox_message",
        sa.column("id", sa.Integer()),
        sa.column("kind", sa.String()),
        sa.column("status", sa.String()),
        sa.column("body", sa.String()),
        sa.column("redacted_body", sa.String()),
        sa.column("bundle_item", sa.JSON()),
    )
    carried_secret = sa.or_(
        outbox.c.kind.in_(ALWAYS_SECRET),
        sa.and_(outbox.c.kind.in_(SECRET_IF_LINK), outbox.c.body.like("%://%")),
    )
    op.execute(outbox.update().where(carried_secret).values(redacted_body=LEGACY_MARKER))
    done = sa.and_(outbox.c.redacted_body.is_not(None), outbox.c.status.not_in(OPEN))
    op.execute(outbox.update().where(done).values(body=outbox.c.redacted_body))
    # Bundled alerts also kept their acknowledgement code in bundle_item.
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(outbox.c.id, outbox.c.bundle_item).where(
            outbox.c.bundle_item.is_not(None), outbox.c.status.not_in(OPEN)
        )
    ).all()
    for row_id, item in rows:
        if isinstance(item, dict) and "ack" in item:
            conn.execute(
                outbox.update()
                .where(outbox.c.id == row_id)
                .values(bundle_item={**item, "ack": "[code hidden]"})
            )


def downgrade() -> None:
    # Scrubbed texts stay scrubbed: the secrets they carried are gone for good.
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_column("redacted_body")
