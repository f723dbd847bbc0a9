"""The SLO gate: a run fails when its failure ratio, p95 or p99 exceed the SLO's load-test limits.

Usage:
    events.quitting.add_listener(slo_gate)          # in the locustfile: sets the exit code
    violations = evaluate(stats.total, thresholds())  # anywhere: judge any Locust StatsEntry
    latency, logins = split_logins(stats, limits.login_route)   # what each latency limit holds

Logins have an objective of their own (dashboards/slo.yaml): the gate holds their p99 to the login
threshold and every other request's p95 and p99 to the latency limits.

The limits come from ``loadtests.slo`` (dashboards/slo.yaml, the file the alert rules come from).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from locust import log as locust_log
from locust.runners import WorkerRunner

from dashboards import LoadTestThresholds
from loadtests.slo import thresholds

logger = logging.getLogger(__name__)


class Stats(Protocol):
    """What the gate reads from a Locust ``StatsEntry`` (usually ``environment.stats.total``)."""

    num_requests: int
    num_failures: int

    @property
    def fail_ratio(self) -> float: ...

    def get_response_time_percentile(self, percent: float) -> float: ...


@dataclass(frozen=True)
class Violation:
    metric: str
    observed: float
    limit: float
    detail: str = ""

    def __str__(self) -> str:
        if self.metric == "failure ratio":
            return (f"failure ratio {self.observed:.2%} {self.detail}exceeds the SLO limit "
                    f"{self.limit:.2%} by {(self.observed - self.limit) * 100:.2f} percentage points")
        if self.metric in ("p95", "p99", "login p99"):
            over = self.observed - self.limit
            return (f"{self.metric} latency {self.observed:.3f}s exceeds the SLO limit {self.limit:.3f}s "
                    f"by {over:.3f}s (+{over / self.limit:.0%})")
        return self.detail


def split_logins(stats: Any, login_route: str) -> tuple[Any, Any]:
    """Return Locust ``StatsEntry`` totals of the requests the latency objective counts and of the
    logins (requests named ``login_route``), from a ``RequestStats``."""
    from locust.stats import StatsEntry

    latency, logins = StatsEntry(stats, "Aggregated", ""), StatsEntry(stats, login_route, "")
    for (name, _method), entry in stats.entries.items():
        (logins if login_route and name == login_route else latency).extend(entry)
    return latency, logins


def evaluate(stats: Stats, limits: LoadTestThresholds, exceptions: int = 0,
             listener_failed: bool = False, latency: Stats | None = None,
             logins: Stats | None = None) -> list[Violation]:
    """Return every way the run breaks ``limits``; an empty list means it passes.

    ``stats`` is the whole run (the failure ratio); ``latency`` the requests held to p95 and p99
    (default: the whole run) and ``logins`` those held to the login p99 (see ``split_logins``).
    """
    violations = []
    if stats.num_requests == 0:
        violations.append(Violation("requests", 0, 1, "no requests were made, so nothing meets the SLO"))
    else:
        if stats.fail_ratio > limits.max_failure_ratio:
            violations.append(Violation("failure ratio", stats.fail_ratio, limits.max_failure_ratio,
                                        f"({stats.num_failures} of {stats.num_requests} requests) "))
        held = stats if latency is None else latency
        checks = [("p95", held, 0.95, limits.p95_seconds), ("p99", held, 0.99, limits.p99_seconds)]
        if logins is not None and limits.login_p99_seconds:
            checks.append(("login p99", logins, 0.99, limits.login_p99_seconds))
        for metric, entry, percent, limit in checks:
            if entry.num_requests == 0:
                continue
            observed = entry.get_response_time_percentile(percent) / 1000
            if observed > limit:
                violations.append(Violation(metric, observed, limit))
    if exceptions:
        violations.append(Violation("exceptions", exceptions, 0,
                                    f"the personas raised {exceptions} unhandled exception(s): "
                                    "a set-up failure or a bug in the load test (see the log)"))
    if listener_failed:
        violations.append(Violation("listener", 1, 0, "setup or an event listener raised an exception "
                                    "(see 'Uncaught exception in event handler' in the log)"))
    return violations


def summary(stats: Stats, limits: LoadTestThresholds) -> str:
    """Describe the run against the limits in one line."""
    if stats.num_requests == 0:
        return "no requests"
    return (f"{stats.num_requests} requests, failure ratio {stats.fail_ratio:.2%} "
            f"(max {limits.max_failure_ratio:.2%}), "
            f"p95 {stats.get_response_time_percentile(0.95) / 1000:.3f}s (max {limits.p95_seconds:.3f}s), "
            f"p99 {stats.get_response_time_percentile(0.99) / 1000:.3f}s (max {limits.p99_seconds:.3f}s)")


def slo_gate(environment: Any, **_kwargs: Any) -> None:
    """Set the process exit code from the SLO: 1 with the reasons when it breaks, 0 when it holds.

    Locust alone exits 1 on any failed request; the SLO allows a small failure budget, so this
    listener decides instead. Workers skip it: only the master (or a local runner) sees all stats.
    """
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return
    options = environment.parsed_options
    if options is not None and getattr(options, "capacity_out", None):
        logger.info("SLO gate: capacity run, the SLO is judged per step in the capacity report")
        return
    limits = thresholds()
    exceptions = sum(e["count"] for e in runner.exceptions.values()) if runner else 0
    latency, logins = split_logins(environment.stats, limits.login_route)
    violations = evaluate(environment.stats.total, limits, exceptions,
                          locust_log.unhandled_greenlet_exception, latency=latency, logins=logins)
    line = summary(environment.stats.total, limits)
    if violations:
        for violation in violations:
            logger.error("SLO gate: FAIL: %s", violation)
        logger.error("SLO gate: FAIL (%s)", line)
        environment.process_exit_code = 1
    else:
        logger.info("SLO gate: PASS (%s)", line)
        environment.process_exit_code = 0
