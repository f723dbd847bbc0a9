"""Injected server errors, for the tests that prove the burn-rate alerts fire.

Registered only when ``FAULT_INJECTION`` is on, which ProductionConfig refuses. A plain
Blueprint, so the route stays out of the OpenAPI spec. It sits under /api/ on purpose: its
answers count in the availability SLI like any API request's.
"""

from __future__ import annotations

from flask import Blueprint, Response

from .errors import problem

bp = Blueprint("faults", __name__)


@bp.get("/api/v1/_faults/<int(min=500, max=599):status>")
def server_error(status: int) -> Response:
    return problem(status, "Injected by FAULT_INJECTION (tests only).")
