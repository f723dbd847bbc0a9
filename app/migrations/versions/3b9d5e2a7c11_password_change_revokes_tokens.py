"""a password change revokes the user's tokens

Each user gets a token version, written into every token issued (the "ver" claim) and raised
when the password changes; a token whose version is not the user's is refused. Existing rows
and tokens issued before this revision (which carry no version) count as 0.

Revision ID: 3b9d5e2a7c11
Revises: 7e3f1b2c9d40
Create Date: 2026-11-23 12:00:00

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = '3b9d5e2a7c11'
down_revision = '7e3f1b2c9d40'
branch_labels = None
depends_on = None


def upgrade():
    # A constant default: PostgreSQL 11+ adds it without rewriting the table, SQLite in place.
    op.add_column("users", sa.Column("token_version", sa.Integer(), server_default="0", nullable=False))


def downgrade():
    # SQLite drops a column by rebuilding the table; keep AUTOINCREMENT (the previous revision's).
    with op.batch_alter_table("users", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("token_version")
