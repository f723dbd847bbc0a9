"""The checks after a deploy: the app's target is up, the repo's rules are loaded, Grafana has the
dashboards. Run against a local server that answers with Prometheus's and Grafana's API shapes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.delivery.cluster_checks import (
    DEPENDENCY_JOBS,
    dashboard_problems,
    probe_problems,
    rule_problems,
    run,
    target_problems,
)


def targets(*healths: str, job: str = "lookout-metrics") -> dict[str, Any]:
    return {"status": "success", "data": {"activeTargets": [
        {"labels": {"job": job}, "scrapeUrl": f"http://10.0.0.{i}:9100/metrics", "health": h,
         "lastError": "" if h == "up" else "connection refused"} for i, h in enumerate(healths)]}}


@pytest.mark.parametrize("answer, problem", [
    (targets("up", "up"), None),
    (targets("up", "down"), "is down: connection refused"),
    (targets("unknown"), "is unknown"),
    (targets("up", job="lookout"), "no active target of job 'lookout-metrics' (jobs: lookout)"),
    ({"data": {"activeTargets": []}}, "(jobs: none)"),
])
def test_targets(answer: dict, problem: str | None):
    found = target_problems(answer, "lookout-metrics")
    assert (found == []) if problem is None else any(problem in p for p in found), found


def test_rules_and_dashboards_missing_are_named():
    loaded = {"data": {"groups": [{"name": "a"}]}}
    assert rule_problems(loaded, {"a", "b"}) == ["rule group 'b' is not loaded"]
    found = dashboard_problems([{"uid": "x", "type": "dash-db"}, {"uid": "y", "type": "dash-folder"}],
                               {"x": "X", "y": "Y"})
    assert found == ["dashboard 'Y' (uid y) is not in Grafana"]


@pytest.fixture
def files(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    rule = tmp_path / "slo.yaml"
    rule.write_text(yaml.safe_dump({"groups": [{"name": "lookout-slo", "rules": []}]}))
    board = tmp_path / "overview.json"
    board.write_text(json.dumps({"uid": "lookout-overview", "title": "Overview"}))
    return [rule], [board]


class FakeApis(BaseHTTPRequestHandler):
    answers: dict[str, Any] = {}
    seen_auth: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization", ""))
        body = json.dumps(self.answers[self.path.split("?")[0]]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def apis() -> Iterator[tuple[str, type[FakeApis]]]:
    handler = type("Apis", (FakeApis,), {"answers": {}, "seen_auth": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_everything_in_place_passes_and_grafana_is_asked_with_credentials(apis, files):
    url, handler = apis
    handler.answers.update({"/api/v1/targets": targets("up"),
                            "/api/v1/rules": {"data": {"groups": [{"name": "lookout-slo"}]}},
                            "/api/search": [{"uid": "lookout-overview", "type": "dash-db"}]})
    assert run(url, url, ("admin", "pw"), wait=0, rule_files=files[0], dashboard_files=files[1]) == []
    assert any(a.startswith("Basic ") for a in handler.seen_auth)


def test_a_down_target_missing_rules_and_dashboards_all_fail(apis, files):
    url, handler = apis
    handler.answers.update({"/api/v1/targets": targets("down"), "/api/v1/rules": {"data": {"groups": []}},
                            "/api/search": []})
    found = run(url, url, ("admin", "pw"), wait=0, rule_files=files[0], dashboard_files=files[1])
    assert len(found) == 3 and "down" in found[0] and "lookout-slo" in found[1] and "Overview" in found[2]


def test_the_dependencies_exporters_and_a_succeeding_probe_pass(apis, files):
    url, handler = apis
    jobs = ("lookout-metrics", *DEPENDENCY_JOBS)
    handler.answers.update({
        "/api/v1/targets": {"data": {"activeTargets": [t for j in jobs for t in targets("up", job=j)["data"][
            "activeTargets"]]}},
        "/api/v1/query": {"data": {"result": [{"metric": {"instance": "http://lookout/readyz"},
                                               "value": [0, "1"]}]}},
        "/api/v1/rules": {"data": {"groups": [{"name": "lookout-slo"}]}},
        "/api/search": [{"uid": "lookout-overview", "type": "dash-db"}]})
    assert run(url, url, ("admin", "pw"), wait=0, rule_files=files[0], dashboard_files=files[1],
               dependency_jobs=DEPENDENCY_JOBS) == []


def test_a_missing_exporter_and_a_failing_probe_are_named(apis, files):
    url, handler = apis
    handler.answers.update({
        "/api/v1/targets": {"data": {"activeTargets": [
            t for j in ("lookout-metrics", "lookout-probe")
            for t in targets("up", job=j)["data"]["activeTargets"]]}},
        "/api/v1/query": {"data": {"result": [{"metric": {"instance": "http://lookout/readyz"},
                                               "value": [0, "0"]}]}},
        "/api/v1/rules": {"data": {"groups": [{"name": "lookout-slo"}]}},
        "/api/search": [{"uid": "lookout-overview", "type": "dash-db"}]})
    found = run(url, url, ("admin", "pw"), wait=0, rule_files=files[0], dashboard_files=files[1],
                dependency_jobs=DEPENDENCY_JOBS)
    jobs = "(jobs: lookout-metrics, lookout-probe)"
    assert found == [f"no active target of job 'lookout-db-metrics' {jobs}",
                     f"no active target of job 'lookout-ratelimit-metrics' {jobs}",
                     "the probe of http://lookout/readyz fails (probe_success 0)"]
    assert probe_problems({"data": {"result": []}}) == ["no probe_success of job 'lookout-probe' yet"]
