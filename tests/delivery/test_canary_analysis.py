"""The canary analysis, asked of a real Prometheus scraping a real Lookout: a healthy canary passes,
one answering injected 5xx (FAULT_INJECTION) fails, one without traffic is inconclusive.

The queries and conditions are those of the AnalysisTemplate the dev stack renders. Two gunicorns
stand for two revisions; Prometheus labels their series with ``rollouts_pod_template_hash`` as the
ServiceMonitor's podTargetLabels does in the cluster. The conditions are Argo Rollouts' expr
language; ``verdict`` evaluates the subset the template uses (``len``, ``isNaN``, ``result[0]``,
comparisons, ``&&`` and ``!``) the way the controller does: failure first, then success, else
inconclusive. The rate windows are the rules' real 5 minutes: with seconds of data they cover the
samples there are, as a new canary's do.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import migrate, service_missing
from promserver import PrometheusServer, prometheus_binary

from dashboards.generate.target import TARGET
from infra.components.rollouts import CANARY_HASH_ARG, HASH_SERIES_LABEL
from infra.mockrun import render
from loadtests.harness import GunicornServer

pytestmark = pytest.mark.slow
HEALTHY, FAULTY, IDLE = "5d8f7c6b9a", "7b9c4d2e1f", "0000000000"


def verdict(success: str, failure: str, result: list[float]) -> str:
    """Argo Rollouts' reading of one measurement: Failed, Successful or Inconclusive."""
    def holds(condition: str) -> bool:
        assert re.fullmatch(r"[\w\s\[\]().<>=!&|0-9]+", condition), condition
        python = condition.replace("&&", " and ").replace("||", " or ").replace("!isNaN", " not isNaN")
        return bool(eval(python, {"__builtins__": {}}, {"len": len, "isNaN": math.isnan, "result": result}))

    if holds(failure):
        return "Failed"
    return "Successful" if holds(success) else "Inconclusive"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    (analysis,) = render("dev").find("AnalysisTemplate")
    return analysis


def run_metric(prometheus: PrometheusServer, metric: dict[str, Any],
               canary_hash: str) -> tuple[str, list[float]]:
    query = metric["provider"]["prometheus"]["query"].replace(f"{{{{args.{CANARY_HASH_ARG}}}}}", canary_hash)
    result = [float(sample["value"][1]) for sample in prometheus.query(query)]
    return verdict(metric["successCondition"], metric["failureCondition"], result), result


class Traffic:
    """API reads against one server; with ``faults`` every fourth request is an injected 500."""

    def __init__(self, url: str, faults: bool) -> None:
        self.url, self.faults, self.sent = url, faults, 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.session = requests.Session()

    def _run(self) -> None:
        while not self.stopped.wait(0.02):
            path = "/api/v1/_faults/500" if self.faults and self.sent % 4 == 0 else "/api/v1/users"
            self.session.get(f"{self.url}{path}", timeout=10)
            self.sent += 1

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.thread.join(15)


@pytest.fixture(scope="module")
def revisions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GunicornServer]]:
    if not prometheus_binary():
        service_missing("prometheus is not installed (Debian package prometheus)")
    servers: dict[str, GunicornServer] = {}
    try:
        for name, faults in ((HEALTHY, False), (FAULTY, True)):
            url = f"sqlite:///{tmp_path_factory.mktemp(name) / 'lookout.db'}"
            migrate(url)
            env = {"LOOKOUT_ENV": "testing", "DATABASE_URL": url, "LOG_LEVEL": "WARNING",
                   **({"FAULT_INJECTION": "true"} if faults else {})}
            servers[name] = GunicornServer(env, workers=1, threads=4, metrics_port=True).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def prometheus(revisions: dict[str, GunicornServer]) -> Iterator[PrometheusServer]:
    scrape = [{"job_name": f"revision-{name}",
               "static_configs": [{"targets": [f"127.0.0.1:{server.metrics_port}"],
                                   "labels": {"job": TARGET.job, HASH_SERIES_LABEL: name}}]}
              for name, server in revisions.items()]
    # The scrape config's job_name is overwritten by the static label, as the operator's relabelling
    # names the job after the Service.
    with PrometheusServer(scrape, []) as prom, \
            Traffic(revisions[HEALTHY].url, faults=False), Traffic(revisions[FAULTY].url, faults=True):
        for name in (HEALTHY, FAULTY):  # two scrapes with traffic in between: a rate exists
            prom.wait_for(lambda n=name: prom.query(
                f'sum(rate(http_server_requests_total{{{HASH_SERIES_LABEL}="{n}", '
                'route=~"/api/.*"}[5m])) > 0'), f"a request rate for revision {name}")
        yield prom


def test_a_healthy_canary_passes_every_metric(prometheus: PrometheusServer, template: dict[str, Any]):
    for metric in template["spec"]["metrics"]:
        outcome, result = run_metric(prometheus, metric, HEALTHY)
        assert outcome == "Successful", (metric["name"], result)


def test_a_canary_answering_server_errors_fails_the_availability_burn(prometheus: PrometheusServer,
                                                                      template: dict[str, Any]):
    outcomes = {m["name"]: run_metric(prometheus, m, FAULTY) for m in template["spec"]["metrics"]}
    outcome, result = outcomes["availability-burn"]
    assert outcome == "Failed" and 0.1 < result[0] < 0.4, result  # a quarter of its API requests
    assert outcomes["latency-burn"][0] == "Successful", "a fast error is still fast"


def test_the_stable_revision_s_errors_do_not_count_against_a_canary(prometheus: PrometheusServer,
                                                                   template: dict[str, Any]):
    """Restricted to the canary's pods: with both revisions scraped, the healthy one still passes
    although the other burns, and the query over every pod would not."""
    metric = next(m for m in template["spec"]["metrics"] if m["name"] == "availability-burn")
    assert run_metric(prometheus, metric, HEALTHY)[0] == "Successful"
    unrestricted = re.sub(rf'{HASH_SERIES_LABEL}="[^"]*", ', "", metric["provider"]["prometheus"]["query"])
    mixed = [float(s["value"][1]) for s in prometheus.query(unrestricted)]
    assert verdict(metric["successCondition"], metric["failureCondition"], mixed) == "Failed"


def test_a_canary_without_traffic_is_inconclusive(prometheus: PrometheusServer, template: dict[str, Any]):
    for metric in template["spec"]["metrics"]:
        assert run_metric(prometheus, metric, IDLE) == ("Inconclusive", [])


@pytest.mark.parametrize("result, expected", [
    ([0.0], "Successful"), ([0.0144], "Successful"), ([0.0145], "Failed"), ([], "Inconclusive"),
    ([math.nan], "Inconclusive")])
def test_the_verdict_reads_conditions_as_the_controller_does(template: dict[str, Any], result: list[float],
                                                             expected: str):
    metric = next(m for m in template["spec"]["metrics"] if m["name"] == "availability-burn")
    assert verdict(metric["successCondition"], metric["failureCondition"], result) == expected
