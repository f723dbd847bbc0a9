"""What the probes of every service are built from: ``/readyz`` answers within its timeout
whatever the network does (each check runs on a helper thread), turns 503 for good once
``begin_shutdown`` is called (a load balancer stops sending traffic while the server drains),
and the database's schema must be at this release's Alembic head.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)
SHUTDOWN_KEY = "lookout.shutting_down"
CHECK_KEY = "lookout.readiness_check"
REVISIONS_KEY = "lookout.revisions"


def begin_shutdown(app: Flask) -> None:
    """Report not ready from now on (the server is draining before it exits)."""
    shutdown_event(app).set()


def shutdown_event(app: Flask) -> threading.Event:
    return app.extensions.setdefault(SHUTDOWN_KEY, threading.Event())


class SingleFlightCheck:
    """Run a check on a daemon thread and wait for it at most ``timeout`` seconds.

    A check that outlives its caller's wait (a cut network) keeps running, bounded by the
    database timeouts; later callers wait on that same run instead of starting another, so
    probes during an outage never pile up threads or pool connections.
    """

    def __init__(self, what: str = "the database") -> None:
        self._lock = threading.Lock()
        self._running: Future[str | None] | None = None
        self.what = what

    def __call__(self, check: Callable[[], str | None], timeout: float) -> str | None:
        with self._lock:
            if self._running is None or self._running.done():
                self._running = Future()
                # In the caller's context: the probe's suppressed instrumentation (no orphan
                # database spans) comes along.
                context = contextvars.copy_context()
                threading.Thread(target=context.run, args=(self._run, check, self._running),
                                 daemon=True, name="readiness-check").start()
            running = self._running
        try:
            return running.result(timeout)
        except FutureTimeout:
            log.warning("readiness: no answer from %s within %s s", self.what, timeout)
            return f"{self.what[0].upper()}{self.what[1:]} did not answer within {timeout:g} s."

    @staticmethod
    def _run(check: Callable[[], str | None], result: Future[str | None]) -> None:
        try:
            result.set_result(check())
        except Exception as exc:  # handed to the waiting request, whose error handler logs it
            result.set_exception(exc)


def check_of(app: Flask, key: str = CHECK_KEY, what: str = "the database") -> SingleFlightCheck:
    """The app's single-flight runner for one kind of check."""
    check = app.extensions.get(key)
    return check if check is not None else app.extensions.setdefault(key, SingleFlightCheck(what))


def known_revisions(app: Flask, migrations: str) -> tuple[frozenset[str], frozenset[str]]:
    """(every revision this release ships, its heads), read from ``migrations`` once."""
    cached = app.extensions.get(REVISIONS_KEY)
    if cached is None:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory(migrations)
        cached = (frozenset(r.revision for r in script.walk_revisions()), frozenset(script.get_heads()))
        app.extensions[REVISIONS_KEY] = cached
    return cached


def schema_problem(app: Flask, engine: Engine, migrations: str, timeout: float,
                   upgrade_command: str) -> str | None:
    """Why the database cannot serve this release, or None when it can.

    The schema must be at this release's head. A revision this release does not know is
    taken to be a newer release's migration (rolling update, expand-then-contract), so old
    pods stay ready while new ones start.
    """
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"SET LOCAL statement_timeout = {int(timeout * 1000)}"))
            current = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        log.warning("readiness: database check failed: %s", exc.__class__.__name__)
        return "The database is not reachable."
    known, heads = known_revisions(app, migrations)
    if not current:
        return f"The database schema is not migrated; run `{upgrade_command}`."
    if current <= known and current != heads:
        return (f"The database schema is at {', '.join(sorted(current))}; this release needs "
                f"{', '.join(sorted(heads))}. Run `{upgrade_command}`.")
    return None
