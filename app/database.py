"""A client-side bound on every wait for PostgreSQL's answer.

statement_timeout is enforced by the server, and tcp_user_timeout and keepalives by the kernel
when the network drops packets. Neither ends a wait on a peer that acknowledges the bytes but
never answers: a frozen server, or a proxy (PgBouncer, a cloud SQL proxy) whose database is gone.
psycopg can bound its waits (``Connection.wait(timeout=...)``) but applies no bound to queries;
this subclass applies ``DATABASE_READ_TIMEOUT`` to every wait on the connection (statements, the
pool's pre-ping, commit, rollback). Connecting is bounded by ``connect_timeout``.

MySQL and MariaDB get the same bounds from PyMySQL's timeouts and the server's statement limit
(app/platform/database.py).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from flask import Flask
from psycopg import errors
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .platform.database import set_up_sessions

log = logging.getLogger(__name__)

# psycopg raises this private subclass of OperationalError when a bounded wait expires;
# tests/test_database_timeouts.py fails if a psycopg release renames it.
WaitTimeout: type[Exception] = errors._WaitTimeout


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection that gives up on a server that does not answer in ``read_timeout``."""

    read_timeout: float = 6.0

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None and len(args) < 2:
            kwargs["timeout"] = self.read_timeout
        try:
            return super().wait(gen, *args, **kwargs)
        except WaitTimeout as exc:
            # The statement may still be running on the server and the protocol is mid-exchange:
            # the connection cannot be reused. Closed, it reads as a disconnect to SQLAlchemy,
            # which then replaces the pool's connections.
            self.close()
            raise psycopg.OperationalError(
                f"no answer from the database within {kwargs['timeout']} s") from exc


def init_app(app: Flask) -> None:
    """Bound the waits of every engine of ``app``; needs the database extension initialised."""
    from .extensions import db

    with app.app_context():
        for engine in db.engines.values():
            bound_waits(engine, app.config["DATABASE_READ_TIMEOUT"])
            set_up_sessions(engine, app.config["DATABASE_STATEMENT_TIMEOUT_MS"])

    # Registered after Flask-SQLAlchemy's, so it runs first (teardowns run in reverse).
    @app.teardown_appcontext
    def _close_session(exc: BaseException | None) -> None:
        """Closing the session rolls back; on a connection that died during the request that
        raises, after the response was chosen, and would turn it into a 500."""
        try:
            db.session.remove()
        except SQLAlchemyError as error:
            log.warning("closing the database session failed: %s", type(error).__name__)
            db.session.registry.clear()  # the pool has invalidated the connection already


def bound_waits(engine: Engine, read_timeout: float) -> None:
    """Make ``engine`` open BoundedConnections (PostgreSQL through psycopg only)."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return
    connection_class: type[BoundedConnection] = type(
        "BoundedConnection", (BoundedConnection,), {"read_timeout": read_timeout})

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        return connection_class.connect(*cargs, **cparams)
