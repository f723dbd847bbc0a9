"""A run against a deployed stack reads the notifier's latency through Prometheus: a real Prometheus
scraping the notifier's real metrics registry, fast emails pass the notifier SLO and slow ones fail it."""

from __future__ import annotations

import logging
import time
from argparse import Namespace
from types import SimpleNamespace

import pytest
from conftest import service_missing
from prometheus_client import start_http_server
from promserver import PrometheusServer, prometheus_binary

from loadtests.harness import free_port
from loadtests.notifier_watch import EMAILS_LABEL, Prometheus, PrometheusError, install, measure
from loadtests.report import loadtest_markdown


@pytest.fixture(scope="module")
def notifier_metrics():
    """The notifier's own metrics (an app's registry), served on 127.0.0.1 as a pod serves them.
    Each test measures from its own start, so what an earlier one emailed is outside its window."""
    from app.notifier import create_app

    app = create_app({"DATABASE_URL": "sqlite://"})
    metrics = app.extensions["lookout.telemetry"].metrics
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        yield metrics, port
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture(scope="module")
def prometheus(notifier_metrics):
    if prometheus_binary() is None:
        service_missing("prometheus is not installed (Debian package prometheus)")
    _, port = notifier_metrics
    with PrometheusServer([{"job_name": "notifier", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
                          []) as server:
        server.wait_for(lambda: server.query('up{job="notifier"} == 1'), "a first scrape of the notifier")
        yield server


def emailed(metrics, latency: float, n: int) -> None:
    for _ in range(n):
        metrics.sent.labels("welcome").inc()
        metrics.latency.labels("welcome").observe(latency)


def test_fast_emails_pass_and_slow_ones_fail_the_notifier_slo(notifier_metrics, prometheus):
    metrics, _ = notifier_metrics
    metrics.lag.set(0)  # the queue is empty once the emails are out
    started = time.time()
    emailed(metrics, 0.3, 4)
    fast = measure(Prometheus(prometheus.url), started, users_created=3, wait=30)
    assert fast.emails >= 3 and fast.count >= 4, fast  # increase() extrapolates a little, never less
    assert 0.25 < fast.p50 <= 0.5 and fast.within_threshold == 1.0 and fast.emails_label == EMAILS_LABEL
    summary = loadtest_markdown(0, fast)
    assert "| against the notifier SLO (99% within 60 s) | **PASS** |" in summary
    assert "as Prometheus scraped it" in summary

    started = time.time()
    emailed(metrics, 90.0, 4)  # past the 60 s threshold: the SLO breaks
    slow = measure(Prometheus(prometheus.url), started, users_created=3, wait=30)
    assert slow.count >= 4 and slow.within_threshold == 0.0 and slow.p50 > 60, slow
    assert "**FAIL**: 0.00% emailed within 60 s, below the SLO's 99.00%" in loadtest_markdown(0, slow)


def test_missing_emails_are_waited_for_then_reported(notifier_metrics, prometheus):
    metrics, _ = notifier_metrics
    metrics.lag.set(0)
    started = time.time()
    emailed(metrics, 0.3, 1)
    result = measure(Prometheus(prometheus.url), started, users_created=50, wait=3)
    assert result.waited_seconds >= 3 and result.emails < 50
    assert "have no welcome email" in loadtest_markdown(0, result)


def test_the_listener_reports_when_locust_quits(notifier_metrics, prometheus, caplog):
    """In a Locust environment as the master has it: the start is noted, the writers' creations
    come from the stats, and the section with its verdict is logged when Locust quits."""
    from locust.env import Environment

    metrics, _ = notifier_metrics
    metrics.lag.set(0)
    environment = Environment(parsed_options=Namespace(prometheus_url=prometheus.url, email_wait=30.0))
    environment.runner = SimpleNamespace()  # not a worker: the master or a local runner
    install(environment)
    caplog.set_level(logging.INFO)
    environment.events.test_start.fire(environment=environment)
    for _ in range(2):  # the writers' creations, as Locust records them
        environment.stats.log_request("POST", "/api/v1/users", 120, 200)
    environment.stats.log_request("POST", "/api/v1/users", 120, 200)
    environment.stats.log_error("POST", "/api/v1/users", "409")  # not created
    emailed(metrics, 0.3, 2)
    environment.events.quitting.fire(environment=environment)
    assert "| users created by the writers | 2 |" in caplog.text
    assert "emails: notifier SLO PASS" in caplog.text


def test_without_a_url_or_on_a_worker_nothing_is_installed():
    from locust.env import Environment
    from locust.runners import WorkerRunner

    quiet = Environment(parsed_options=Namespace(prometheus_url="", email_wait=30.0))
    quiet.runner = SimpleNamespace()
    install(quiet)
    worker = Environment(parsed_options=Namespace(prometheus_url="http://p:9090", email_wait=30.0))

    class Worker(WorkerRunner):  # only its type is read: nothing of a real worker starts
        def __init__(self) -> None:
            pass

        def __del__(self) -> None:
            pass

    worker.runner = Worker()
    install(worker)
    assert not quiet.events.quitting._handlers and not worker.events.quitting._handlers


def test_an_unreachable_prometheus_is_an_error_not_a_pass():
    with pytest.raises(PrometheusError, match=r"127\.0\.0\.1"):
        Prometheus(f"http://127.0.0.1:{free_port()}", timeout=2).query("up")
