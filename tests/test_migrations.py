"""Migrations produce exactly the models' schema, on PostgreSQL, MySQL/MariaDB and SQLite."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

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


def test_migrations_match_models_on_each_server(new_database):
    assert schema_diff(new_database()) == []


@pytest.mark.mysql
@pytest.mark.parametrize("service", ["users", "notifier"])
def test_every_mysql_table_is_utf8mb4_compared_as_postgresql_compares(new_mysql_database, service):
    """Alembic compares no table options: the character set and collation are checked here, on
    each service's tables, and DATETIME keeps microseconds."""
    from app.notifier import create_app as create_notifier
    from app.notifier.extensions import MIGRATIONS
    from app.notifier.extensions import db as notifier_db

    url = new_mysql_database()
    factory, handle, directory = ((create_app, db, None) if service == "users"
                                  else (create_notifier, notifier_db, MIGRATIONS))
    with factory({"DATABASE_URL": url}).app_context():
        upgrade(directory=directory) if directory else upgrade()
        with handle.engine.connect() as conn:
            tables = conn.exec_driver_sql(
                "SELECT table_name, table_collation FROM information_schema.tables"
                " WHERE table_schema = DATABASE() AND table_name <> 'alembic_version'").fetchall()
            columns = conn.exec_driver_sql(
                "SELECT DISTINCT character_set_name, collation_name FROM information_schema.columns"
                " WHERE table_schema = DATABASE() AND table_name <> 'alembic_version'"
                " AND character_set_name IS NOT NULL").fetchall()
            precisions = {row[0] for row in conn.exec_driver_sql(
                "SELECT datetime_precision FROM information_schema.columns"
                " WHERE table_schema = DATABASE() AND data_type = 'datetime'")}
        handle.engine.dispose()
    assert tables and {collation for _, collation in tables} == {"utf8mb4_bin"}
    assert columns == [("utf8mb4", "utf8mb4_bin")]
    assert precisions == {6}


def test_migrations_match_models_on_sqlite(tmp_path):
    assert schema_diff(f"sqlite:///{tmp_path / 'm.db'}") == []


def insert_users(*rows: tuple[int, str, int | None]) -> None:
    """Insert users (id, role, created_by_id) with the columns every revision since the first has,
    as rows an older revision holds: ids 1, 2, 3 are a@, b@, c@x.example named A, B, C."""
    with db.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users"
                 " (id, email, name, role, password_hash, created_by_id, created_at, updated_at)"
                 " VALUES (:id, :email, :name, :role, 'h', :by, '2026-01-01', '2026-01-01')"),
            [{"id": id_, "email": f"{chr(96 + id_)}@x.example", "name": chr(64 + id_), "role": role, "by": by}
             for id_, role, by in rows])


def test_sqlite_rebuild_keeps_rows_and_references_and_stops_reusing_ids(tmp_path):
    """The AUTOINCREMENT migration rebuilds the table on SQLite: every row and created_by stays,
    foreign keys are enforced again afterwards."""
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}"})
    with app.app_context():
        upgrade(revision="c2cbd7ad8c42")
        insert_users((1, "admin", None), (2, "user", 1), (3, "user", 2))
        upgrade()
        with db.engine.begin() as conn:
            assert conn.exec_driver_sql("SELECT id, created_by_id FROM users ORDER BY id").fetchall() == [
                (1, None), (2, 1), (3, 2)]
            assert "AUTOINCREMENT" in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'users'").scalar()
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            conn.exec_driver_sql("DELETE FROM users WHERE id = 3")
            conn.exec_driver_sql(
                "INSERT INTO users (email, name, role, password_hash, created_at, updated_at)"
                " VALUES ('d@x.example', 'D', 'user', 'h', '2026-01-01', '2026-01-01')")
            assert conn.exec_driver_sql("SELECT max(id) FROM users").scalar() == 4
        downgrade(revision="base")
        assert inspect(db.engine).get_table_names() == ["alembic_version"]
        db.engine.dispose()


def test_the_check_can_fail(tmp_path):
    """A model change without a migration shows up as a difference."""
    from sqlalchemy import Column, Integer, Table

    extra = Table("not_migrated", db.metadata, Column("id", Integer, primary_key=True))
    try:
        diff = schema_diff(f"sqlite:///{tmp_path / 'm.db'}")
    finally:
        db.metadata.remove(extra)
    assert any(op[0] == "add_table" and op[1].name == "not_migrated" for op in diff)


def test_downgrade_to_base_removes_everything(new_database):
    app = create_app({"DATABASE_URL": new_database()})
    with app.app_context():
        upgrade()
        downgrade(revision="base")
        assert inspect(db.engine).get_table_names() == ["alembic_version"]
        db.engine.dispose()


def test_token_versions_start_at_zero_and_the_downgrade_keeps_autoincrement(tmp_path):
    """Existing users get token version 0 (their tokens, which carry none, stay valid); going
    back a revision on SQLite rebuilds the table without the column, AUTOINCREMENT kept."""
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}"})
    with app.app_context():
        upgrade(revision="7e3f1b2c9d40")
        insert_users((1, "admin", None), (2, "user", 1))
        upgrade(revision="3b9d5e2a7c11")
        with db.engine.begin() as conn:
            assert conn.exec_driver_sql("SELECT id, token_version FROM users ORDER BY id").fetchall() == [
                (1, 0), (2, 0)]
        downgrade(revision="7e3f1b2c9d40")
        with db.engine.begin() as conn:
            assert conn.exec_driver_sql("SELECT id, created_by_id FROM users ORDER BY id").fetchall() == [
                (1, None), (2, 1)]
            table_sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'users'").scalar()
            assert "AUTOINCREMENT" in table_sql and "token_version" not in table_sql
        db.engine.dispose()


@pytest.mark.mysql
def test_a_deleted_users_id_is_not_reused_after_a_mariadb_restart():
    """InnoDB keeps its AUTO_INCREMENT counter across restarts (MariaDB 10.2.4+, MySQL 8.0+; before,
    it was recomputed as max(id) + 1 at start): the newest user deleted, the server crashed and
    started again, the next user gets a new id. A MariaDB server of the test's own."""
    from conftest import service_missing
    from faults import MariaDBServer, mariadb_binaries

    binaries = mariadb_binaries()
    if binaries is None:
        service_missing("MariaDB server binaries (mariadbd, mariadb-install-db) not found")
    with MariaDBServer(binaries) as server:
        server.create_database("lookout")
        app = create_app({"DATABASE_URL": server.url("lookout")})
        with app.app_context():
            upgrade()
            insert_users((1, "admin", None), (2, "user", 1), (3, "user", 1))
            with db.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM users WHERE id = 3")
            db.engine.dispose()
            server.stop("immediate")
            server.start()
            with db.engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO users (email, name, role, password_hash, created_at, updated_at)"
                    " VALUES ('d@x.example', 'D', 'user', 'h', '2026-01-01', '2026-01-01')")
                assert conn.exec_driver_sql("SELECT max(id) FROM users").scalar() == 4
            db.engine.dispose()
