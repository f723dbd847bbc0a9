"""Prometheus metrics: RED per route template, in-flight, database and domain counters.

One ``CollectorRegistry`` per app, so tests can build many apps in one process. With one
gunicorn worker (the Kubernetes process model) the registry is exposed directly, exemplars
included; with several workers ``PROMETHEUS_MULTIPROC_DIR`` is set by app/gunicorn_conf.py and
each scrape merges the workers' files (prometheus_client multiprocess mode, no exemplars).
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, Flask, Response, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from sqlalchemy import event
from sqlalchemy.engine import Engine

KEY = "lookout.metrics"
UNMATCHED = "unmatched"  # every path without a route shares this one label value
# Methods kept as label values; any other (HTTP allows any token) is counted as OTHER_METHOD,
# OpenTelemetry's convention, so made-up methods cannot add series.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = "_OTHER"
# Request latency buckets (seconds). They must include every SLO threshold in
# dashboards/slo.yaml exactly (tests/test_metrics.py checks it), or the SLO cannot be read
# off the histogram.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DB_OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
OTHER_OPERATION = "OTHER"  # every other statement (BEGIN, PRAGMA, ...) shares this label value
RATE_LIMITS = ("login", "login-failures", "writes")  # the scopes in app/ratelimit.py
AUTH_FAILURE_REASONS = ("credentials", "token", "forbidden")  # what the auth code counts
CACHES = ("users",)  # the read caches (app/cache.py)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class Metrics:
    """The app's instruments, all on one registry."""

    def __init__(self, app: Flask) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = registry = CollectorRegistry(auto_describe=True)
        if not self.multiprocess:  # multiprocess mode cannot collect these per process
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)  # collections per generation: "is it the GC?"
        labels = ("method", "route", "status")
        self.requests = Counter("http_server_requests", "HTTP requests answered.", labels,
                                registry=registry)
        self.duration = Histogram("http_server_request_duration_seconds",
                                  "Time from routing to response, per request.", labels,
                                  buckets=REQUEST_BUCKETS, registry=registry)
        self.in_flight = Gauge("http_server_requests_in_flight", "Requests being handled now.",
                               registry=registry, multiprocess_mode="livesum")
        self.capacity = Gauge("http_server_concurrency_limit",
                              "Requests the server can handle at once (workers x threads).",
                              registry=registry, multiprocess_mode="livesum")
        self.build = Gauge("lookout_build_info", "Version, commit and environment; always 1.",
                           ("version", "commit", "environment"), registry=registry,
                           multiprocess_mode="max")
        self.db_duration = Histogram("db_client_operation_duration_seconds",
                                     "Database statement time, by SQL operation.", ("operation",),
                                     buckets=DB_BUCKETS, registry=registry)
        self.db_errors = Counter("db_client_errors", "Database statements that raised.", ("operation",),
                                 registry=registry)
        self.db_in_use = Gauge("db_client_connections_in_use", "Pool connections checked out.",
                               registry=registry, multiprocess_mode="livesum")
        self.db_pool_max = Gauge("db_client_connections_max", "Pool size plus overflow.",
                                 registry=registry, multiprocess_mode="livesum")
        self.users_created = Counter("lookout_users_created", "Users created.", registry=registry)
        self.auth_failures = Counter("lookout_auth_failures", "Refused authentications, by reason.",
                                     ("reason",), registry=registry)
        self.rate_limited = Counter("lookout_rate_limited", "Requests refused with 429, by limit.",
                                    ("limit",), registry=registry)
        self.cache_hits = Counter("lookout_cache_hits", "Reads answered from the read cache, by cache.",
                                  ("cache",), registry=registry)
        self.cache_misses = Counter("lookout_cache_misses", "Reads the read cache could not answer (then "
                                    "read from the database), by cache.", ("cache",), registry=registry)
        self.cache_errors = Counter("lookout_cache_errors", "Cache calls that failed or timed out (the "
                                    "request went on with the database), by cache.", ("cache",),
                                    registry=registry)
        self.cache_invalidations = Counter("lookout_cache_invalidations", "Cached records removed after "
                                           "a committed write, by cache.", ("cache",), registry=registry)
        self.cache_bypassed = Gauge("lookout_cache_bypassed", "1 while this process reads past its cache "
                                    "because Redis failed (CACHE_RETRY_SECONDS), by cache.", ("cache",),
                                    registry=registry, multiprocess_mode="max")
        for cache in CACHES:
            for instrument in (self.cache_hits, self.cache_misses, self.cache_errors,
                               self.cache_invalidations, self.cache_bypassed):
                instrument.labels(cache)
        # Every series whose label values are a fixed set exists at zero from the start, so a rate
        # or a panel over it has data from the first scrape, not from the first error. (Request
        # series are labelled by the request itself, so they are born with the traffic.)
        for operation in (*sorted(DB_OPERATIONS), OTHER_OPERATION):
            self.db_errors.labels(operation)
            self.db_duration.labels(operation)
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason)
        for limit in RATE_LIMITS:
            self.rate_limited.labels(limit)
        self.rate_limit_fallback = Gauge(
            "lookout_rate_limit_fallback",
            "1 while this process counts rate limits in its own memory because the shared store failed.",
            registry=registry, multiprocess_mode="livesum")
        self.build.labels(app.extensions["lookout.version"], app.config["GIT_COMMIT"],
                          app.config["LOOKOUT_ENV"]).set(1)
        self.capacity.set(1)  # gunicorn's post_worker_init sets the real figure per worker
        # (method, route, status) -> the request counter's and histogram's children. Bounded:
        # methods are folded to HTTP_METHODS, routes to the app's rules plus UNMATCHED.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float,
                        exemplar: dict[str, str] | None) -> None:
        if method not in HTTP_METHODS:  # any token is a method: one label value for the rest
            method = OTHER_METHOD
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # labels() validates and locks on every call: once per series
            status_label = str(status)
            children = self._children[key] = (self.requests.labels(method, route, status_label),
                                              self.duration.labels(method, route, status_label))
        counter, histogram = children
        counter.inc()
        if exemplar and not self.multiprocess:
            histogram.observe(seconds, exemplar)
        else:
            histogram.observe(seconds)

    def expose(self) -> Response:
        """Render the registry in the format the scraper asked for (OpenMetrics carries exemplars)."""
        registry: Any = self.registry
        if self.multiprocess:
            from prometheus_client import multiprocess  # lazily: the directory is set by then

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(registry), content_type=content_type)

    def instrument_engine(self, engine: Engine) -> None:
        """Time every statement by operation and follow the pool's checkouts."""
        pool = engine.pool
        size = getattr(pool, "size", lambda: 1)() + max(getattr(pool, "_max_overflow", 0), 0)
        self.db_pool_max.inc(size)

        @event.listens_for(engine, "before_cursor_execute")
        def _start(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            if context is not None:
                context._lookout_started = time.perf_counter()

        # operation -> histogram child: labels() validates and locks on every call, and this runs
        # for every statement. Bounded by DB_OPERATIONS plus OTHER.
        children: dict[str, Any] = {}

        @event.listens_for(engine, "after_cursor_execute")
        def _end(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            started = getattr(context, "_lookout_started", None)
            if started is not None:
                operation = operation_of(statement)
                child = children.get(operation)
                if child is None:
                    child = children[operation] = self.db_duration.labels(operation)
                child.observe(time.perf_counter() - started)

        @event.listens_for(engine, "handle_error")
        def _error(context: Any) -> None:
            self.db_errors.labels(operation_of(context.statement or "")).inc()

        event.listen(engine, "checkout", lambda *a: self.db_in_use.inc())
        event.listen(engine, "checkin", lambda *a: self.db_in_use.dec())


def operation_of(statement: str) -> str:
    """First SQL keyword, folded to a fixed set so the label stays small."""
    word = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
    return word if word in DB_OPERATIONS else OTHER_OPERATION


def register_endpoint(app: Flask, metrics: Metrics) -> None:
    """Serve ``/metrics`` from a plain blueprint, which keeps it out of the OpenAPI spec.

    When ``METRICS_PORT`` is set, the server also listens there and ``/metrics`` answers only
    on that port, so the public port (and the load balancer) never exposes it.
    """
    bp = Blueprint("metrics", __name__)
    metrics_port = app.config["METRICS_PORT"]

    @bp.get("/metrics")
    def scrape() -> Response:
        if metrics_port and request.environ.get("SERVER_PORT") != str(metrics_port):
            from apiflask import abort

            abort(404)
        return metrics.expose()

    app.register_blueprint(bp)
