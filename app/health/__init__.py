"""Kubernetes probes: ``/livez`` (the process answers) and ``/readyz`` (it can serve).

``/readyz`` answers within READINESS_TIMEOUT_SECONDS whatever the network does (the database
check runs on a helper thread), and turns 503 for good once ``begin_shutdown`` is called, so a
load balancer stops sending traffic while the server drains (app/gunicorn_worker.py). The
mechanics live in app/platform/health.py, shared with the notifier.
"""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import Response, current_app

from ..errors import problem
from ..extensions import MIGRATIONS, db
from ..platform.health import begin_shutdown, check_of, schema_problem, shutdown_event
from ..schemas import HealthOut, NotReadyProblem

__all__ = ["begin_shutdown", "bp"]
bp = APIBlueprint("health", __name__, tag="Health")
NOT_READY: Any = {503: {"description": "Not ready",
                         "content": {"application/json": {"schema": NotReadyProblem}}}}
UPGRADE = "flask --app app db upgrade"


@bp.get("/livez")
@bp.output(HealthOut)
@bp.doc(summary="Liveness: the process is serving (no dependencies checked)")
def livez() -> dict[str, str]:
    return {"status": "ok"}


def database_problem() -> str | None:
    """Why the database cannot serve this release (app/platform/health.py), or None."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return schema_problem(app, db.engine, MIGRATIONS, app.config["READINESS_TIMEOUT_SECONDS"], UPGRADE)


@bp.get("/readyz")
@bp.output(HealthOut)
@bp.doc(summary="Readiness: the database answers, at this release's schema, within the timeout; "
                "503 from the moment the server begins to shut down",
        responses=NOT_READY)
def readyz() -> dict[str, object] | Response:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if shutdown_event(app).is_set():
        return problem(503, "The server is shutting down.", {"Retry-After": "5"},
                       checks={"server": "shutting down"})

    def in_app_context() -> str | None:
        with app.app_context():
            return database_problem()

    problem_text = check_of(app)(in_app_context, app.config["READINESS_TIMEOUT_SECONDS"])
    if problem_text is not None:
        return problem(503, problem_text, {"Retry-After": "5"}, checks={"database": "failing"})
    return {"status": "ok", "checks": {"database": "ok"}}
