"""Kubernetes probes: ``/livez`` (the process answers) and ``/readyz`` (it can serve).

``/readyz`` answers within READINESS_TIMEOUT_SECONDS whatever the network does (the database
check runs on a helper thread), and turns 503 for good once ``begin_shutdown`` is called, so a
load balancer stops sending traffic while the server drains (app/gunicorn_worker.py).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from apiflask import APIBlueprint
from flask import Flask, Response, current_app
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..errors import problem
from ..extensions import MIGRATIONS, db
from ..schemas import HealthOut, NotReadyProblem

bp = APIBlueprint("health", __name__, tag="Health")
NOT_READY: Any = {503: {"description": "Not ready",
                         "content": {"application/json": {"schema": NotReadyProblem}}}}
log = logging.getLogger(__name__)
SHUTDOWN_KEY = "lookout.shutting_down"
CHECK_KEY = "lookout.readiness_check"


def begin_shutdown(app: Flask) -> None:
    """Report not ready from now on (the server is draining before it exits)."""
    _shutdown_event(app).set()


def _shutdown_event(app: Flask) -> threading.Event:
    return app.extensions.setdefault(SHUTDOWN_KEY, threading.Event())


class SingleFlightCheck:
    """Run a check on a daemon thread and wait for it at most ``timeout`` seconds.

    A check that outlives its caller's wait (a cut network) keeps running, bounded by the
    database timeouts; later callers wait on that same run instead of starting another, so
    probes during an outage never pile up threads or pool connections.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: Future[str | None] | None = None

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
            log.warning("readiness: no answer from the database within %s s", timeout)
            return f"The database did not answer within {timeout:g} s."

    @staticmethod
    def _run(check: Callable[[], str | None], result: Future[str | None]) -> None:
        try:
            result.set_result(check())
        except Exception as exc:  # handed to the waiting request, whose error handler logs it
            result.set_exception(exc)


@bp.get("/livez")
@bp.output(HealthOut)
@bp.doc(summary="Liveness: the process is serving (no dependencies checked)")
def livez() -> dict[str, str]:
    return {"status": "ok"}


def known_revisions() -> tuple[frozenset[str], frozenset[str]]:
    """(every revision this release ships, its heads), read from app/migrations once."""
    cached = current_app.extensions.get("lookout.revisions")
    if cached is None:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory(MIGRATIONS)
        cached = (frozenset(r.revision for r in script.walk_revisions()), frozenset(script.get_heads()))
        current_app.extensions["lookout.revisions"] = cached
    return cached


def database_problem() -> str | None:
    """Why the database cannot serve this release, or None when it can.

    The schema must be at this release's head. A revision this release does not know is
    taken to be a newer release's migration (rolling update, expand-then-contract), so old
    pods stay ready while new ones start.
    """
    from alembic.runtime.migration import MigrationContext

    timeout = current_app.config["READINESS_TIMEOUT_SECONDS"]
    try:
        with db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"SET LOCAL statement_timeout = {int(timeout * 1000)}"))
            current = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        log.warning("readiness: database check failed: %s", exc.__class__.__name__)
        return "The database is not reachable."
    known, heads = known_revisions()
    if not current:
        return "The database schema is not migrated; run `flask --app app db upgrade`."
    if current <= known and current != heads:
        return (f"The database schema is at {', '.join(sorted(current))}; this release needs "
                f"{', '.join(sorted(heads))}. Run `flask --app app db upgrade`.")
    return None


@bp.get("/readyz")
@bp.output(HealthOut)
@bp.doc(summary="Readiness: the database answers, at this release's schema, within the timeout; "
                "503 from the moment the server begins to shut down",
        responses=NOT_READY)
def readyz() -> dict[str, object] | Response:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if _shutdown_event(app).is_set():
        return problem(503, "The server is shutting down.", {"Retry-After": "5"},
                       checks={"server": "shutting down"})
    check = app.extensions.get(CHECK_KEY) or app.extensions.setdefault(CHECK_KEY, SingleFlightCheck())

    def in_app_context() -> str | None:
        with app.app_context():
            return database_problem()

    problem_text = check(in_app_context, app.config["READINESS_TIMEOUT_SECONDS"])
    if problem_text is not None:
        return problem(503, problem_text, {"Retry-After": "5"}, checks={"database": "failing"})
    return {"status": "ok", "checks": {"database": "ok"}}
