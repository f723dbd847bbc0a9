"""Every error leaves a Lookout service as RFC 9457 ``application/problem+json``.

Views raise ``apiflask.abort(status, detail)``; ``register_problem_handlers`` turns that,
Werkzeug's HTTP errors, validation errors and unhandled exceptions into one body shape:
``{"type", "title", "status", "detail", "instance"}`` plus ``errors`` for field problems.
``register_database_outage`` answers a database that cannot be reached with 503 and Retry-After
rather than 500; a service adds its own handlers next to these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from apiflask import APIFlask, HTTPError
from flask import Response, json, request

PROBLEM_MIMETYPE = "application/problem+json"
log = logging.getLogger(__name__)


def _field_errors(messages: Any, path: tuple[str, ...] = ()) -> Iterator[dict[str, str | None]]:
    """Flatten webargs' ``{location: {field: [msg]}}`` (nested for nested fields)."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from _field_errors(value, (*path, str(key)))
    elif isinstance(messages, list | tuple) and all(isinstance(m, str) for m in messages):
        for message in messages:
            location, *field = path or ("body",)
            yield {"location": location, "field": ".".join(field) or None, "message": message}
    else:
        yield from _field_errors([str(messages)], path)


def problem(status: int, detail: str | None = None, headers: Any = None, **extra: Any) -> Response:
    """Build a problem+json response."""
    phrase = HTTPStatus(status).phrase
    body = {
        "type": "about:blank",
        "title": phrase,
        "status": status,
        "detail": detail or phrase,
        "instance": request.path,
        **extra,
    }
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    for name, value in dict(headers or {}).items():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def from_http_error(error: HTTPError) -> Response:
    """Map APIFlask's error (views' ``abort``, Werkzeug errors, validation) to a problem."""
    status, extra = error.status_code, dict(error.extra_data)
    if status == 422 and isinstance(error.detail, dict):
        extra["errors"] = list(_field_errors(error.detail))
        detail = "The request has invalid fields; see errors."
    elif status == 400 and error.message == HTTPStatus(400).phrase:
        detail = "The request body is not valid JSON."  # webargs' only 400
    elif error.message and error.message != HTTPStatus(status).phrase:
        detail = error.message  # abort(status, "what went wrong")
    else:
        detail = DEFAULT_DETAILS.get(status, HTTPStatus(status).phrase)
    return problem(status, detail, error.headers, **extra)


DEFAULT_DETAILS = {
    401: "A valid bearer token is required.",
    403: "Your role does not allow this operation.",
    404: "The requested resource was not found.",
    405: "The method is not allowed for the requested URL.",
    413: "The request body is larger than the allowed maximum.",
    415: "The request body must be JSON (Content-Type: application/json).",
}


def register_problem_handlers(app: APIFlask) -> None:
    """Route HTTP errors and unhandled exceptions through ``problem``."""
    app.error_processor(from_http_error)

    @app.errorhandler(Exception)
    def unhandled(exc: Exception) -> Response:
        if isinstance(exc, HTTPError):  # raised outside a view, e.g. by auth hooks
            return from_http_error(exc)
        log.exception("unhandled exception on %s %s", request.method, request.path)
        return problem(500, "An unexpected error occurred; it has been logged.")


DATABASE_DOWN = "The database is unavailable; retry later."


def register_database_outage(app: APIFlask, on_failure: Callable[[], None] | None = None) -> None:
    """Answer a database that refuses or times out (SQLAlchemy's OperationalError, a full pool's
    TimeoutError) with 503 and Retry-After, calling ``on_failure`` first (a circuit breaker)."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeoutError)
    def database_unavailable(exc: Exception) -> Response:
        log.warning("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
        if on_failure is not None:
            on_failure()
        return problem(503, DATABASE_DOWN, {"Retry-After": "5"})
