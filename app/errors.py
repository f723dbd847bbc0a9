"""Every error leaves the service as RFC 9457 ``application/problem+json``: the platform's
handlers (app/platform/errors.py) plus the database outage's 503.

A rate limit's 429 is answered by app/ratelimit.py, with ``problem`` too.
"""

from __future__ import annotations

from apiflask import APIFlask
from flask import Response

from .breaker import DatabaseDown, report_failure
from .platform.errors import (
    DATABASE_DOWN,
    PROBLEM_MIMETYPE,
    problem,
    register_database_outage,
    register_problem_handlers,
)

__all__ = ["PROBLEM_MIMETYPE", "problem", "register_errorhandlers"]


def register_errorhandlers(app: APIFlask) -> None:
    """Route every error through ``problem``."""
    register_problem_handlers(app)
    register_database_outage(app, report_failure)

    @app.errorhandler(DatabaseDown)
    def database_still_down(exc: DatabaseDown) -> Response:
        return problem(503, DATABASE_DOWN, {"Retry-After": "5"})
