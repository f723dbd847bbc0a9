"""The users service's metrics: the platform's (RED per route, in-flight, database, build) plus
its domain counters on the same registry."""

from __future__ import annotations

from flask import Flask
from prometheus_client import Counter, Gauge

from ..platform.metrics import (  # noqa: F401  # re-exported: the service's buckets and labels
    DB_BUCKETS,
    REQUEST_BUCKETS,
    UNMATCHED,
    Metrics,
    register_endpoint,
)

RATE_LIMITS = ("login", "login-failures", "writes")  # the scopes in app/ratelimit.py
AUTH_FAILURE_REASONS = ("credentials", "token", "forbidden")  # what the auth code counts


class UsersMetrics(Metrics):
    """The platform's instruments and the users service's own."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        registry = self.registry
        self.users_created = Counter("lookout_users_created", "Users created.", registry=registry)
        self.auth_failures = Counter("lookout_auth_failures", "Refused authentications, by reason.",
                                     ("reason",), registry=registry)
        self.rate_limited = Counter("lookout_rate_limited", "Requests refused with 429, by limit.",
                                    ("limit",), registry=registry)
        # Series with a fixed set of label values exist at zero from the first scrape.
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason)
        for limit in RATE_LIMITS:
            self.rate_limited.labels(limit)
        self.rate_limit_fallback = Gauge(
            "lookout_rate_limit_fallback",
            "1 while this process counts rate limits in its own memory because the shared store failed.",
            registry=registry, multiprocess_mode="livesum")
