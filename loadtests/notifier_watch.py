"""A run against a deployed stack: the writers' welcome emails and their event-to-email latency,
from the notifier's own metrics through Prometheus, judged against the notifier SLO.

Usage (the locustfile installs it):
    events.init.add_listener(notifier_watch.install)
    locust ... --prometheus-url http://prometheus.monitoring:9090 [--email-wait 120]

With ``--prometheus-url`` (or LOOKOUT_LOADTEST_PROMETHEUS_URL) the master, or a local runner, notes
when the load starts; when Locust quits it waits, at most ``--email-wait`` seconds, until
Prometheus counts at least as many welcome emails since then as the writers created users and
has seen the notifier's queue empty after the load, then logs the event-to-email section of
``make loadtest``'s summary (``emails.email_section``) with its verdict. Every stack has Prometheus
and the notifier's metrics; a mail catcher only dev and the kind e2e have. ``make loadtest``
reads the consumer's metrics itself (loadtests/run.py) and sets no URL. The verdict does not
change the exit code: the SLO gate judges the API's requests, as in ``make loadtest``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import requests

from loadtests import emails

logger = logging.getLogger(__name__)
POLL_SECONDS = 2.0
LAG = "lookout_notifier_consumer_lag"  # messages ready in the notifier's queue, per consumer
EMAILS_LABEL = "welcome emails sent during the run (every new account's)"
HOW = ("From the change's commit (the event's `occurred_at`) to the SMTP server's acceptance: the "
       "notifier's `lookout_notifier_event_to_email_seconds` as Prometheus scraped it from every consumer, "
       "`increase()` over the run (an estimate that copes with consumers started and stopped during it), "
       "percentiles as `histogram_quantile` computes them. It counts every email of the run: the seed "
       "users' and the personas' accounts' too.")


class PrometheusError(RuntimeError):
    """Prometheus refused a query or could not be reached."""


class Prometheus:
    """Instant queries through Prometheus's HTTP API."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def query(self, expr: str) -> list[dict[str, Any]]:
        try:
            answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=self.timeout)
            body = answer.json()
        except (requests.RequestException, ValueError) as exc:
            raise PrometheusError(f"{self.url}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url}: {expr}: {body.get('error', answer.status_code)}")
        return list(body["data"]["result"])


def measure(prometheus: Prometheus, started: float, users_created: int, wait: float,
            clock: Callable[[], float] = time.time) -> emails.EmailResult:
    """Wait (bounded by ``wait``) for the emails of the load that began at ``started`` (Unix
    time), then read their latency from the notifier's histogram."""
    from dashboards import load_slo

    ended = clock()

    def window() -> int:
        return max(1, math.ceil(clock() - started))

    def arrived() -> bool:
        welcome = emails.vector_total(prometheus.query(emails.welcome_query(window())))
        lag = prometheus.query(f"max({LAG})")
        seen = prometheus.query(f"min(timestamp({LAG}))")
        drained = bool(lag) and emails.vector_total(lag) == 0 and emails.vector_total(seen) >= ended
        return round(welcome) >= users_created and drained

    while not arrived() and clock() - ended < wait:
        time.sleep(POLL_SECONDS)  # Prometheus scrapes on its own schedule: ask again
    waited = clock() - ended
    buckets = emails.vector_buckets(prometheus.query(emails.latency_query(window())))
    welcome = emails.vector_total(prometheus.query(emails.welcome_query(window())))
    slo = load_slo()
    threshold = slo.notifier_threshold_seconds
    count = round(emails.total(buckets))
    return emails.EmailResult(
        users_created=users_created, emails=round(welcome), count=count,
        p50=emails.quantile(0.5, buckets), p95=emails.quantile(0.95, buckets),
        p99=emails.quantile(0.99, buckets),
        within_threshold=emails.share_within(threshold, buckets) if count else math.nan,
        threshold_seconds=threshold, waited_seconds=waited, target=slo.notifier_target,
        emails_label=EMAILS_LABEL, how=HOW)


def install(environment: Any, **_kwargs: Any) -> None:
    """An ``events.init`` listener: on the master or a local runner with ``--prometheus-url``,
    note the load's start and report the emails when Locust quits."""
    from locust.runners import WorkerRunner

    options = environment.parsed_options
    url = getattr(options, "prometheus_url", "") if options is not None else ""
    if not url or isinstance(environment.runner, WorkerRunner):
        return
    started: list[float] = []
    environment.events.test_start.add_listener(lambda **_kw: started.append(time.time()))

    def report(environment: Any, **_kw: Any) -> None:
        if not started:
            logger.warning("emails: the load never started; nothing to measure")
            return
        post = environment.stats.get(emails.CREATE_REQUEST[1], emails.CREATE_REQUEST[0])
        created = post.num_requests - post.num_failures
        try:
            result = measure(Prometheus(url), started[0], created, float(options.email_wait))
        except PrometheusError as exc:
            logger.error("emails: not measured: %s", exc)
            return
        broken = emails.violations(result)
        for line in emails.email_section(result):
            logger.info("%s", line)
        logger.log(logging.ERROR if broken else logging.INFO, "emails: notifier SLO %s",
                   "FAIL: " + "; ".join(broken) if broken else "PASS")

    environment.events.quitting.add_listener(report)
