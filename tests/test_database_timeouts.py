"""What bounds a wait on PostgreSQL and MySQL/MariaDB: the engine options, and the client-side read
timeout."""

from __future__ import annotations

import time

import pytest
from faults import TCPProxy
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from app.config import ConfigError, load_config
from app.database import BoundedConnection, WaitTimeout, bound_waits


def test_postgres_engine_options_bound_every_wait():
    config = load_config(
        {"DATABASE_URL": "postgresql://db/x", "DATABASE_READ_TIMEOUT": "6", "DATABASE_CONNECT_TIMEOUT": "2"},
        default_env="testing",
    )
    options = config.engine_options()
    assert options["pool_pre_ping"] is True
    assert options["pool_timeout"] == 3.0
    args = options["connect_args"]
    assert args["connect_timeout"] == 2
    assert args["tcp_user_timeout"] == 6000  # unacknowledged bytes: the network is cut
    assert args["keepalives"] == 1 and args["keepalives_idle"] * 1000 < args["tcp_user_timeout"] * 2
    assert "statement_timeout=5000" in args["options"]


def test_read_timeout_must_outlast_the_statement_timeout():
    with pytest.raises(ConfigError, match="DATABASE_READ_TIMEOUT must be longer"):
        load_config(
            {"DATABASE_READ_TIMEOUT": "5", "DATABASE_STATEMENT_TIMEOUT_MS": "5000"}, default_env="testing"
        )
    load_config({"DATABASE_READ_TIMEOUT": "5", "DATABASE_STATEMENT_TIMEOUT_MS": "0"}, default_env="testing")


def test_the_psycopg_timeout_it_relies_on_exists():
    """app/database.py uses psycopg's bounded wait and its private timeout error."""
    import inspect

    import psycopg

    assert issubclass(WaitTimeout, psycopg.OperationalError)
    assert "timeout" in inspect.signature(psycopg.Connection.wait).parameters


@pytest.mark.postgres
def test_a_peer_that_never_answers_is_given_up_on_and_replaced(new_postgres_database):
    url = make_url(new_postgres_database())
    with TCPProxy(url.port or 5432) as proxy:
        engine = create_engine(
            url.set(host="127.0.0.1", port=proxy.port),
            pool_pre_ping=True,
            connect_args={"connect_timeout": 2},
        )
        bound_waits(engine, read_timeout=1.0)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            assert isinstance(conn.connection.dbapi_connection, BoundedConnection)
            proxy.cut()
            started = time.monotonic()
            with pytest.raises(OperationalError, match=r"no answer from the database within 1\.0 s"):
                conn.execute(text("SELECT 1"))
            assert time.monotonic() - started < 2
        proxy.restore()
        with engine.connect() as conn:  # a fresh connection: the dead one was not reused
            assert conn.execute(text("SELECT 1")).scalar() == 1
        engine.dispose()


@pytest.mark.postgres
def test_a_connection_that_dies_mid_request_does_not_turn_the_answer_into_a_500(new_postgres_database):
    """The request's answer is chosen; then closing its session (a rollback) finds the connection
    gone. That is logged and the pool replaces the connection; the answer stands."""
    import psycopg

    from app import create_app
    from app.extensions import db

    url = new_postgres_database()
    app = create_app({"DATABASE_URL": url})

    @app.get("/api/v1/dies")
    def dies():
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()  # opens a transaction
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        return {"ok": True}

    assert app.test_client().get("/api/v1/dies").status_code == 200
    with app.app_context():
        assert db.session.execute(text("SELECT 1")).scalar() == 1  # a fresh connection
        db.session.remove()
        db.engine.dispose()


def test_mysql_engine_options_bound_every_wait_and_recycle_below_wait_timeout():
    from app.platform.database import MYSQL_POOL_RECYCLE, MYSQL_WAIT_TIMEOUT

    config = load_config(
        {"DATABASE_URL": "mariadb://db/x", "DATABASE_READ_TIMEOUT": "6", "DATABASE_CONNECT_TIMEOUT": "2"},
        default_env="testing",
    )
    assert config.DATABASE_URL == "mysql+pymysql://db/x"
    options = config.engine_options()
    assert options["pool_pre_ping"] is True and options["hide_parameters"] is True
    assert options["isolation_level"] == "READ COMMITTED"
    assert options["pool_recycle"] == MYSQL_POOL_RECYCLE < MYSQL_WAIT_TIMEOUT
    args = options["connect_args"]
    assert (args["connect_timeout"], args["read_timeout"], args["write_timeout"]) == (2, 6, 6)
    assert (args["charset"], args["collation"], args["sql_mode"]) == ("utf8mb4", "utf8mb4_bin", "TRADITIONAL")


@pytest.mark.mysql
def test_a_mysql_session_is_strict_utf8mb4_utc_and_limits_its_statements(new_mysql_database):
    """What every connection of the app is set to, read back from the server; a statement over
    the limit is ended by the server and answered 503 (MariaDB's max_statement_time)."""
    from app import create_app
    from app.extensions import db
    from app.platform.database import MYSQL_POOL_RECYCLE

    app = create_app({"DATABASE_URL": new_mysql_database(), "DATABASE_STATEMENT_TIMEOUT_MS": "300",
                      "DATABASE_READ_TIMEOUT": "3"})

    @app.get("/api/v1/slow")
    def slow():
        db.session.execute(text("SELECT SLEEP(2)"))
        return {"ok": True}

    with app.app_context():
        row = db.session.execute(text(
            "SELECT @@sql_mode, @@character_set_connection, @@collation_connection, @@time_zone,"
            " @@wait_timeout, @@max_statement_time, @@tx_isolation, VERSION()")).one()
        db.session.remove()
        sql_mode, charset, collation, zone, wait_timeout, limit, isolation, version = row
        assert "MariaDB" in version  # this machine's server; MySQL would set max_execution_time
        assert {"STRICT_TRANS_TABLES", "STRICT_ALL_TABLES"} <= set(sql_mode.split(","))
        assert (charset, collation, zone) == ("utf8mb4", "utf8mb4_bin", "+00:00")
        assert wait_timeout > MYSQL_POOL_RECYCLE
        assert (float(limit), isolation) == (0.3, "READ-COMMITTED")
        started = time.monotonic()
        response = app.test_client().get("/api/v1/slow")
        assert response.status_code == 503 and time.monotonic() - started < 1.5
        db.engine.dispose()


@pytest.mark.mysql
def test_a_mysql_peer_that_never_answers_is_given_up_on_and_replaced(new_mysql_database):
    """PyMySQL's read timeout ends the wait; the connection is closed, and the next is new."""
    from app.config import load_config as load

    url = make_url(new_mysql_database())
    with TCPProxy(url.port or 3306) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        config = load({"DATABASE_URL": proxied, "DATABASE_READ_TIMEOUT": "1",
                       "DATABASE_STATEMENT_TIMEOUT_MS": "500"}, default_env="testing")
        engine = create_engine(config.DATABASE_URL, **config.engine_options())
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            proxy.cut()
            started = time.monotonic()
            with pytest.raises(OperationalError, match="Lost connection"):
                conn.execute(text("SELECT 1"))
            assert time.monotonic() - started < 2
        proxy.restore()
        with engine.connect() as conn:  # a fresh connection: the dead one was not reused
            assert conn.execute(text("SELECT 1")).scalar() == 1
        engine.dispose()
