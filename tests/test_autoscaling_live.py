"""The adapter rule's query against a real Prometheus that scraped a real Lookout under Locust load.

Two gunicorns stand for two pods of the lookout namespace (the labels the ServiceMonitor gives
their series); Locust sends a fixed rate of API requests to one of them. The rule's
``metricsQuery`` is expanded the way prometheus-adapter expands it for the HPA's request about
both pods (pkg/naming/metrics_query.go: ``<<.Series>>`` the metric, ``<<.LabelMatchers>>``
``namespace="…",pod=~"a|b"``, ``<<.GroupBy>>`` ``pod``) and evaluated at a moment inside the
run: the loaded pod's value equals the rate Locust sent over the same window (from its
per-second stats history) within 10 percent, and the idle pod's is (near) zero.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import add_admin, migrate, service_missing
from promserver import PrometheusServer, prometheus_binary

from infra.components.autoscaling import REQUESTS_COUNTER, rate_window, request_rate_rule
from loadtests.harness import ROOT, GunicornServer, launch, stop, wait_until

pytestmark = pytest.mark.slow
NAMESPACE = "lookout"
PODS = ("lookout-5c8f7-loaded", "lookout-5c8f7-idle")
SCRAPE_INTERVAL = "5s"  # the ServiceMonitor interval the rule is rendered for: a 20 s window
USERS, RATE = 10, 3.0  # Locust: 30 requests a second
RUN_SECONDS = 45


def expand(query: str, series: str, namespace: str, pods: list[str]) -> str:
    """Fill a metricsQuery template as prometheus-adapter does for pods of one namespace."""
    pod = f'pod="{pods[0]}"' if len(pods) == 1 else f'pod=~"{"|".join(pods)}"'
    return (query.replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", f'namespace="{namespace}",{pod}')
            .replace("<<.GroupBy>>", "pod"))


def sent_rate(history: Path, start: float, end: float) -> float:
    """Requests per second Locust completed between ``start`` and ``end`` (its stats history:
    cumulative counts once a second, interpolated)."""
    points = [(float(row["Timestamp"]), float(row["Total Request Count"]))
              for row in csv.DictReader(history.open()) if row["Name"] == "Aggregated"]

    def count_at(at: float) -> float:
        before = max((p for p in points if p[0] <= at), default=None)
        after = min((p for p in points if p[0] >= at), default=None)
        assert before and after, f"the stats history does not cover {at}"
        if after[0] == before[0]:
            return before[1]
        return before[1] + (after[1] - before[1]) * (at - before[0]) / (after[0] - before[0])

    return (count_at(end) - count_at(start)) / (end - start)


def first_sent(history: Path) -> float | None:
    """When Locust's stats history first counts an answered request (None: not yet)."""
    if not history.exists():
        return None
    for row in csv.DictReader(history.open()):
        if row["Name"] == "Aggregated" and float(row["Total Request Count"] or 0) > 0:
            return float(row["Timestamp"])
    return None


def test_expand_fills_the_template_as_the_adapter_does():
    query = "sum(rate(<<.Series>>{<<.LabelMatchers>>,route=~\"/api/.*\"}[20s])) by (<<.GroupBy>>)"
    assert expand(query, "x_total", "ns", ["a", "b"]) == (
        'sum(rate(x_total{namespace="ns",pod=~"a|b",route=~"/api/.*"}[20s])) by (pod)')
    assert 'pod="a"' in expand(query, "x_total", "ns", ["a"])


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GunicornServer]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('rate') / 'lookout.db'}"
    migrate(url)
    add_admin(url)
    env = {"LOOKOUT_ENV": "testing", "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    with GunicornServer(env, workers=1, threads=4, metrics_port=True) as loaded, \
            GunicornServer(env, workers=1, threads=2, metrics_port=True) as idle:
        yield [loaded, idle]


@pytest.fixture(scope="module")
def prometheus(pods: list[GunicornServer]) -> Iterator[PrometheusServer]:
    if not prometheus_binary():
        service_missing("prometheus is not installed (Debian package prometheus)")
    scrape = [{"job_name": "lookout-metrics", "static_configs": [
        {"targets": [f"127.0.0.1:{server.metrics_port}"], "labels": {"namespace": NAMESPACE, "pod": pod}}
        for server, pod in zip(pods, PODS, strict=True)]}]
    with PrometheusServer(scrape, []) as prom:
        prom.wait_for(lambda: len(prom.query("up == 1")) == 2, "both pods scraped")
        yield prom


def run_locust(url: str, out: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    env |= {"LOCUST_RATE": str(RATE)}
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "tests" / "steady_load.py"), "--headless",
               "-u", str(USERS), "-r", str(USERS), "-t", f"{RUN_SECONDS}s", "--host", url,
               "--csv", str(out / "steady"), "--only-summary", "--loglevel", "WARNING"]
    with (out / "locust.log").open("wb") as log:
        return launch(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_the_per_pod_rate_the_adapter_serves_is_the_rate_locust_sent(
        pods: list[GunicornServer], prometheus: PrometheusServer, tmp_path: Path):
    rule = request_rate_rule(SCRAPE_INTERVAL)
    window = float(rate_window(SCRAPE_INTERVAL).removesuffix("s"))
    query = expand(rule["metricsQuery"], REQUESTS_COUNTER, NAMESPACE, list(PODS))
    history = tmp_path / "steady_stats_history.csv"
    locust = run_locust(pods[0].url, tmp_path)

    def window_scraped() -> float | None:
        """The last scrape of the loaded pod, once it is a full window (and the ramp) after
        Locust's first answered request."""
        assert locust.poll() is None, (tmp_path / "locust.log").read_text()
        first = first_sent(history)
        scraped = prometheus.query(f'timestamp(up{{pod="{PODS[0]}"}})')
        last = float(scraped[0]["value"][1]) if scraped else 0.0
        return last if first is not None and last - first >= window + 3 else None

    try:
        at = wait_until(window_scraped, "a full rate window of load scraped", timeout=RUN_SECONDS,
                        interval=0.5)
        result = prometheus.api("query", query=query, time=at)["result"]
        assert locust.wait(timeout=RUN_SECONDS + 30) == 0, (tmp_path / "locust.log").read_text()
    finally:
        stop(locust)
    values = {series["metric"]["pod"]: float(series["value"][1]) for series in result}
    assert set(values) <= set(PODS) and all(set(s["metric"]) == {"pod"} for s in result), result
    sent = sent_rate(tmp_path / "steady_stats_history.csv", at - window, at)
    assert sent > 0.8 * USERS * RATE, f"Locust sent {sent:.1f} req/s, not the {USERS * RATE} asked"
    print(f"adapter query: {values}; Locust sent {sent:.2f} req/s over the same {window:g}s")
    assert values[PODS[0]] == pytest.approx(sent, rel=0.10), (values, sent)
    assert values.get(PODS[1], 0.0) < 0.05 * sent  # the probe of the harness is no API request


def test_the_rule_counts_no_probes(pods: list[GunicornServer], prometheus: PrometheusServer):
    """Probes hit the pods whatever the load: the rate the HPA sees leaves them out."""
    for _ in range(20):
        requests.get(f"{pods[1].url}/livez", timeout=5)
    rule = request_rate_rule(SCRAPE_INTERVAL)
    query = expand(rule["metricsQuery"], REQUESTS_COUNTER, NAMESPACE, [PODS[1]])
    everything = query.replace(',route=~"/api/.*"', "")
    prometheus.wait_for(lambda: prometheus.query(f"({everything}) > 0"), "the probes scraped")
    assert all(float(s["value"][1]) == 0 for s in prometheus.query(query))
