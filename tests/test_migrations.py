"""Migrations produce exactly the models' schema, on PostgreSQL and SQLite."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from app import create_app
from app.extensions import db


def schema_diff(url: str) -> list:
    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        upgrade()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                             "compare_server_default": True})
            diff = compare_metadata(context, db.metadata)
        db.engine.dispose()
    return diff


@pytest.mark.postgres
def test_migrations_match_models_on_postgresql(new_postgres_database):
    assert schema_diff(new_postgres_database()) == []


def test_migrations_match_models_on_sqlite(tmp_path):
    assert schema_diff(f"sqlite:///{tmp_path / 'm.db'}") == []


def test_the_check_can_fail(tmp_path):
    """A model change without a migration shows up as a difference."""
    from sqlalchemy import Column, Integer, Table

    extra = Table("not_migrated", db.metadata, Column("id", Integer, primary_key=True))
    try:
        diff = schema_diff(f"sqlite:///{tmp_path / 'm.db'}")
    finally:
        db.metadata.remove(extra)
    assert any(op[0] == "add_table" and op[1].name == "not_migrated" for op in diff)


@pytest.mark.postgres
def test_downgrade_to_base_removes_everything(new_postgres_database):
    app = create_app({"DATABASE_URL": new_postgres_database()})
    with app.app_context():
        upgrade()
        downgrade(revision="base")
        assert inspect(db.engine).get_table_names() == ["alembic_version"]
        db.engine.dispose()
