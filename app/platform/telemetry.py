"""Request ids, access log lines, Prometheus metrics and OpenTelemetry traces for any service's app.

Settings read from ``app.config``: TELEMETRY_ENABLED (metrics and traces; request ids and logs
stay on), METRICS_PORT, SERVICE_NAME, GIT_COMMIT, LOOKOUT_ENV. OTEL_SDK_DISABLED=true turns
tracing off alone. A service calls ``init_telemetry`` with its ``Metrics`` class and engines.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Iterable

from flask import Flask, Response, g, request
from sqlalchemy.engine import Engine

from .metrics import UNMATCHED, Metrics, register_endpoint
from .tracing import Tracing, current_trace_ids

KEY = "lookout.telemetry"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # anything else is replaced, not logged
PROBES = frozenset({"health.livez", "health.readyz"})
access_log = logging.getLogger("lookout.access")


class Telemetry:
    """What ``init_telemetry`` attached to one app."""

    def __init__(self, app: Flask, tracer_provider: object | None = None,
                 metrics_class: type[Metrics] = Metrics) -> None:
        enabled = app.config["TELEMETRY_ENABLED"]
        self.metrics = metrics_class(app) if enabled else None
        tracing_on = enabled and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true"
        self.tracing = Tracing(app, tracer_provider) if tracing_on else None  # type: ignore[arg-type]

    def shutdown(self, timeout_seconds: float) -> None:
        if self.tracing is not None:
            self.tracing.shutdown(timeout_seconds)


def init_telemetry(app: Flask, engines: Iterable[Engine], tracer_provider: object | None = None,
                   metrics_class: type[Metrics] = Metrics) -> Telemetry:
    """Attach telemetry to ``app``, instrumenting ``engines`` (the app's database engines)."""
    telemetry = app.extensions[KEY] = Telemetry(app, tracer_provider, metrics_class)
    for engine in engines:
        if telemetry.metrics is not None:
            telemetry.metrics.instrument_engine(engine)
        if telemetry.tracing is not None:
            telemetry.tracing.instrument_engine(engine)
    if telemetry.metrics is not None:
        register_endpoint(app, telemetry.metrics)
    _register_request_hooks(app, telemetry.metrics, telemetry.tracing)
    return telemetry


def telemetry_of(app: Flask) -> Telemetry | None:
    return app.extensions.get(KEY)


def new_request_id() -> str:
    """32 hex digits. A correlation id is not a secret: no system entropy call per request."""
    return f"{random.getrandbits(128):032x}"  # nosec B311 # a log correlation id, not a secret


def _register_request_hooks(app: Flask, metrics: Metrics | None, tracing: Tracing | None) -> None:
    # These run on every request: the request and g proxies are resolved once per hook. They are
    # registered after the Flask instrumentation's, so the request span exists in _start, and
    # _done runs before the instrumentation detaches its context (Flask reverses teardowns).
    @app.before_request
    def _start() -> None:
        req, ctx = request._get_current_object(), g._get_current_object()  # type: ignore[attr-defined]
        ctx.started = time.perf_counter()
        if tracing is not None:
            ctx.quiet = tracing.quiet_unless_sampled()
        given = req.headers.get("X-Request-ID", "")
        ctx.request_id = given if REQUEST_ID.fullmatch(given) else new_request_id()
        if metrics is not None and req.endpoint != "metrics.scrape":
            metrics.in_flight.inc()
            ctx.in_flight = True

    @app.after_request
    def _finish(response: Response) -> Response:
        req, ctx = request._get_current_object(), g._get_current_object()  # type: ignore[attr-defined]
        request_id = ctx.get("request_id") or new_request_id()
        response.headers["X-Request-ID"] = request_id
        endpoint = req.endpoint
        if endpoint == "metrics.scrape":
            return response
        seconds = time.perf_counter() - ctx.get("started", time.perf_counter())
        rule = req.url_rule
        route, status, method = rule.rule if rule is not None else UNMATCHED, response.status_code, req.method
        ids = current_trace_ids()
        if metrics is not None:
            exemplar = {"trace_id": ids[0], "span_id": ids[1]} if ids and ids[2] else None
            metrics.observe_request(method, route, status, seconds, exemplar)
        level = logging.DEBUG if endpoint in PROBES else logging.INFO
        if access_log.isEnabledFor(level):
            extra = {"method": method, "route": route, "path": req.path, "status": status,
                     "duration_ms": round(seconds * 1000, 3), "request_id": request_id}
            if ids is not None:  # saves the log filter looking them up again
                extra["trace_id"], extra["span_id"], extra["trace_sampled"] = ids
            access_log.log(level, "%s %s %s", method, req.path, status, extra=extra)
        return response

    @app.teardown_request
    def _done(exc: BaseException | None) -> None:
        if metrics is not None and g.pop("in_flight", False):
            metrics.in_flight.dec()
        quiet = g.pop("quiet", None)
        if quiet is not None:
            quiet.__exit__(None, None, None)
