"""The checks after a deploy: the app's target is up, the repo's rules are loaded, Grafana has the
dashboards, Loki has a request's line by its trace id. Run against a local server that answers with
Prometheus's, Grafana's and Loki's API shapes."""

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
    check_datasources,
    check_logs,
    dashboard_problems,
    datasource_problems,
    log_problems,
    log_query,
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


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def loki_answer(*lines: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "streams", "result": [
        {"stream": {"service_name": "lookout", "level": "INFO"},
         "values": [["1764640000000000000", line] for line in lines]}] if lines else []}}


def test_log_query_filters_the_structured_metadata_not_the_line():
    assert log_query(TRACE) == f'{{service_name="lookout"}} | trace_id="{TRACE}"'


@pytest.mark.parametrize(("query", "labels", "problems"), [
    (loki_answer("GET /api/v1/users/7 401"), ["service_name", "level", "k8s_namespace_name"], []),
    (loki_answer(), ["service_name"], [f"Loki has no line with trace_id {TRACE}"]),
    (loki_answer("GET"), ["service_name", "trace_id"], ["Loki has a label trace_id"]),
])
def test_log_problems(query, labels, problems):
    found = log_problems(query, {"status": "success", "data": labels}, TRACE)
    assert len(found) == len(problems) and all(f.startswith(p) for f, p in zip(found, problems, strict=True))


def test_check_logs_asks_loki_for_the_trace_and_fails_while_the_line_is_absent(apis):
    url, handler = apis
    seen: list[str] = []
    handler.do_GET = lambda self: (seen.append(self.path), FakeApis.do_GET(self))  # type: ignore[method-assign]
    handler.answers.update({"/loki/api/v1/query_range": loki_answer(),
                            "/loki/api/v1/labels": {"status": "success", "data": ["service_name"]}})
    assert check_logs(url, TRACE, wait=0) == [f"Loki has no line with trace_id {TRACE} ({log_query(TRACE)})"]
    handler.answers["/loki/api/v1/query_range"] = loki_answer("the line")
    assert check_logs(url, TRACE, wait=0) == []
    asked = [p for p in seen if p.startswith("/loki/api/v1/query_range")]
    assert asked and all(f"trace_id%3D%22{TRACE}%22" in p for p in asked)


TO_LOGS = '{service_name="${__span.tags["service.name"]}"} | trace_id="${__trace.traceId}"'


def provisioned(*, url: str = "${__value.raw}", field_uid: str = "traces", logs_uid: str = "logs",
                query: str = TO_LOGS) -> tuple[dict[str, Any], dict[str, Any]]:
    """Grafana's answers for the two data sources, as the program provisions them (after Grafana
    expanded the file: $${...} arrives as ${...})."""
    logs = {"uid": "logs", "type": "loki", "jsonData": {"derivedFields": [
        {"name": "trace_id", "matcherType": "label", "matcherRegex": "trace_id", "datasourceUid": field_uid,
         "url": url}]}}
    traces = {"uid": "traces", "type": "tempo", "jsonData": {"tracesToLogsV2": {
        "datasourceUid": logs_uid, "customQuery": True, "query": query}}}
    return logs, traces


@pytest.mark.parametrize(("sources", "problem"), [
    (provisioned(), None),
    (provisioned(url="$${__value.raw}"), "escaping"),
    (provisioned(url=""), "escaping"),
    (provisioned(field_uid="jaeger"), "opens data source 'jaeger'"),
    (provisioned(logs_uid="other"), "trace-to-logs opens 'other'"),
    (provisioned(query='{service_name="x"} |= "${__trace.traceId}"'), "does not filter"),
    (({"uid": "logs", "jsonData": {}}, provisioned()[1]), "no derived field"),
])
def test_datasource_problems(sources, problem):
    found = datasource_problems(*sources)
    assert (found == []) if problem is None else (len(found) == 1 and problem in found[0])


def test_the_infra_values_pass_the_datasource_check_once_grafana_expands_them():
    """The program writes $${...}; Grafana's provisioning turns $$ into $. Both ends agree."""
    from infra.components.monitoring import MonitoringArgs
    from infra.components.monitoring_values import grafana_datasources

    sources = {s["uid"]: json.loads(json.dumps(s).replace("$$", "$"))
               for s in grafana_datasources(MonitoringArgs("monitoring", (), (), ()))}
    assert datasource_problems(sources["logs"], sources["traces"]) == []


def test_check_datasources_asks_grafana_with_credentials(apis):
    url, handler = apis
    logs, traces = provisioned()
    handler.answers.update({"/api/datasources/uid/logs": logs, "/api/datasources/uid/traces": traces})
    assert check_datasources(url, ("admin", "pw"), wait=0) == []
    assert all(a.startswith("Basic ") for a in handler.seen_auth)
    handler.answers["/api/datasources/uid/logs"] = provisioned(url="$${__value.raw}")[0]
    assert len(check_datasources(url, ("admin", "pw"), wait=0)) == 1
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
