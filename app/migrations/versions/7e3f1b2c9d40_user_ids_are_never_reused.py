"""user ids are never reused

PostgreSQL's sequence never hands out an id twice. SQLite's plain INTEGER PRIMARY KEY gives a new
row the highest id in the table plus one, so deleting the newest user let the next one take its
id: a client still holding it (or retrying a DELETE) would reach someone else. AUTOINCREMENT
makes SQLite remember the highest id it ever gave. SQLite cannot add it to a table, so the table
is rebuilt, rows copied (Alembic's batch mode; env.py turns foreign-key actions off meanwhile).
Other databases are left as they are.

Revision ID: 7e3f1b2c9d40
Revises: c2cbd7ad8c42
Create Date: 2026-11-23 10:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '7e3f1b2c9d40'
down_revision = 'c2cbd7ad8c42'
branch_labels = None
depends_on = None


def _rebuild_users(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("users", recreate="always",
                              table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass


def upgrade():
    _rebuild_users(autoincrement=True)


def downgrade():
    _rebuild_users(autoincrement=False)
