"""What bounds a wait on PostgreSQL: the engine options, and the client-side read timeout."""

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
