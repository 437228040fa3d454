"""instrument texts loaded by a site; the text version a response answered

Revision ID: 0013
Revises: 0015
Create Date: 2026-12-07 12:00:00.000000+00:00

A site loads the wording of a licensed questionnaire (the EORTC QLQ-C30 and its translations) per
language from its own copy (`stepdown instruments load-text`): one row per load, versioned per
instrument and language, read by every web worker from the database. A response records which
version of that text the participant answered (NULL: the wording came with the instrument file,
or the response predates this revision).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel.sql.sqltypes types)
from alembic import op


revision: str = "0013"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instrument_text",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instrument_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column(
            "locale",
            sa.Enum("en", "fr", "zh", name="locale", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "instrument_version", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False
        ),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("source_file", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("loaded_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("loaded_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "instrument_key", "locale", "version", name="uq_instrument_text_version"
        ),
    )
    with op.batch_alter_table("survey_response", schema=None) as batch_op:
        batch_op.add_column(sa.Column("text_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("survey_response", schema=None) as batch_op:
        batch_op.drop_column("text_version")
    op.drop_table("instrument_text")
