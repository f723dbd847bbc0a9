"""Request ids, access log lines, Prometheus metrics and OpenTelemetry traces for the users
service: app/platform/telemetry.py with the service's own counters (metrics.py).

Settings: TELEMETRY_ENABLED (metrics and traces; request ids and logs stay on), METRICS_PORT.
OTEL_SDK_DISABLED=true turns tracing off alone.
"""

from __future__ import annotations

from typing import cast

from flask import Flask

from ..platform.telemetry import KEY, Telemetry, init_telemetry, new_request_id  # noqa: F401  # re-exported
from .metrics import UsersMetrics


def init_app(app: Flask, tracer_provider: object | None = None) -> Telemetry:
    """Attach telemetry to ``app``; needs the database extension initialised first."""
    from ..extensions import db

    with app.app_context():
        engines = list(db.engines.values())
    return init_telemetry(app, engines, tracer_provider, UsersMetrics)


def _metrics() -> UsersMetrics | None:
    from flask import current_app

    telemetry = current_app.extensions.get(KEY)
    return cast("UsersMetrics | None", telemetry.metrics if telemetry is not None else None)


def count_user_created() -> None:
    if (metrics := _metrics()) is not None:
        metrics.users_created.inc()


def count_auth_failure(reason: str) -> None:
    """Count a refused authentication: ``credentials`` (a wrong password), ``token`` or ``forbidden``."""
    if (metrics := _metrics()) is not None:
        metrics.auth_failures.labels(reason).inc()


def count_rate_limited(limit: str) -> None:
    """Count a request refused by a rate limit: ``login``, ``login-failures`` or ``writes``."""
    if (metrics := _metrics()) is not None:
        metrics.rate_limited.labels(limit).inc()


def set_rate_limit_fallback(on: bool) -> None:
    """Say whether this process counts rate limits alone (the shared store failed) or not."""
    if (metrics := _metrics()) is not None:
        metrics.rate_limit_fallback.set(1 if on else 0)
