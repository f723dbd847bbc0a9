"""Every error leaves the service as RFC 9457 ``application/problem+json``: the platform's
handlers (app/platform/errors.py) plus the database outage's 503.

A rate limit's 429 is answered by app/ratelimit.py, with ``problem`` too.
"""

from __future__ import annotations

import logging

from apiflask import APIFlask
from flask import Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from .breaker import DatabaseDown, report_failure
from .platform.errors import PROBLEM_MIMETYPE, problem, register_problem_handlers

__all__ = ["PROBLEM_MIMETYPE", "problem", "register_errorhandlers"]
log = logging.getLogger(__name__)


def register_errorhandlers(app: APIFlask) -> None:
    """Route every error through ``problem``."""
    register_problem_handlers(app)

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeoutError)
    def database_unavailable(exc: Exception) -> Response:
        log.warning("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
        report_failure()
        return problem(503, "The database is unavailable; retry later.", {"Retry-After": "5"})

    @app.errorhandler(DatabaseDown)
    def database_still_down(exc: DatabaseDown) -> Response:
        return problem(503, "The database is unavailable; retry later.", {"Retry-After": "5"})
