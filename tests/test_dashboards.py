"""The generated files are up to date, and the dashboards are well formed for Grafana 11."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dashboards import HERE, dashboard_files, dashboard_queries, load_slo, log_queries
from dashboards.generate import render, stale
from infra.components.monitoring_values import LOG_LABELS, LOGS_DATASOURCE_UID

ROOT = HERE.parent


def test_the_committed_rules_and_dashboards_are_what_the_generator_writes():
    files = render(load_slo())
    assert {p.relative_to(ROOT).as_posix() for p in files} == {
        "dashboards/rules/slo.yaml", "dashboards/rules/operational.yaml",
        "dashboards/rules/dependencies.yaml", "dashboards/lookout-overview.json",
        "dashboards/lookout-notifier.json", "dashboards/lookout-slo.json",
        "dashboards/lookout-dependencies.json"}
    assert stale(files) == [], "run `make dashboards` and commit the result"


def test_the_staleness_check_sees_an_edited_slo(tmp_path):
    """A target changed in slo.yaml without regenerating: every file derived from it is stale."""
    edited = tmp_path / "slo.yaml"
    edited.write_text((HERE / "slo.yaml").read_text().replace("target: 0.999", "target: 0.995"))
    files = render(load_slo(edited))
    assert {p.name for p in stale(files)} == {"slo.yaml", "lookout-slo.json", "lookout-overview.json"}


def test_the_check_command_exits_1_on_a_stale_file(tmp_path):
    """`python -m dashboards.generate --check` in a copy of the package, before and after an edit."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(HERE, tmp_path / "dashboards", ignore=shutil.ignore_patterns("__pycache__"))

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dashboards.generate", "--check"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(tmp_path)})

    assert check().returncode == 0
    rules = tmp_path / "dashboards" / "rules" / "slo.yaml"
    rules.write_text(rules.read_text().replace("> 0.0144", "> 0.0145"))  # a hand edit
    result = check()
    assert result.returncode == 1
    assert result.stdout == "stale: dashboards/rules/slo.yaml (run `make dashboards`)\n"


def boards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in dashboard_files()]


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_dashboards_have_stable_uids_and_a_data_source_variable():
    found = {b["uid"]: b for b in boards()}
    assert set(found) == {"lookout-overview", "lookout-notifier", "lookout-slo", "lookout-dependencies"}
    for board in found.values():
        assert board["schemaVersion"] >= 39  # Grafana 11
        (variable,) = board["templating"]["list"]
        assert variable == {**variable, "type": "datasource", "name": "datasource", "query": "prometheus"}
        for panel in panels(board):
            if panel["datasource"]["type"] == "loki":  # log panels: the provisioned Loki, by its uid
                assert panel["datasource"] == {"type": "loki", "uid": LOGS_DATASOURCE_UID}, panel["title"]
                assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_every_prometheus_target_is_checked_and_log_targets_are_set_apart():
    """The PromQL contract tests read dashboard_queries(): every non-Loki target must be in it, and
    no LogQL (which Prometheus cannot parse) may be."""
    targets = [(b["uid"], p["title"], t) for b in boards() for p in panels(b) for t in p["targets"]]
    promql = {(q.dashboard, q.panel, q.expr) for q in dashboard_queries()}
    logql = {(q.dashboard, q.panel, q.expr) for q in log_queries()}
    for uid, title, target in targets:
        found = (uid, title, target["expr"])
        assert found in (logql if target["datasource"]["type"] == "loki" else promql), found
    assert len(promql) + len(logql) == len({(u, t, x["expr"]) for u, t, x in targets})
    assert {q.panel for q in log_queries()} == {"Log lines by level", "Warnings and errors"}


def test_log_queries_select_the_service_by_bounded_labels_only():
    """LogQL stream selectors name only labels the collector makes (never an id), and the panels
    show the service's warnings and errors and its volume by level."""
    exprs = [q.expr for q in log_queries()]
    for expr in exprs:
        for label in re.findall(r"(\w+)\s*=~?", expr.split("}")[0].split("{", 1)[1]):
            assert label.replace("_", ".") in {a.replace("_", ".") for a in LOG_LABELS}, (label, expr)
    assert 'level=~"WARNING|ERROR|CRITICAL"' in " ".join(exprs)
    assert any(e.startswith("sum by (level) (count_over_time(") for e in exprs)


def test_a_loki_panel_without_its_datasource_type_would_reach_the_promql_checks(tmp_path):
    board = {"uid": "x", "panels": [{"title": "p", "datasource": {"type": "loki", "uid": "logs"},
                                     "targets": [{"refId": "A", "expr": '{service_name="a"}'}]}]}
    (tmp_path / "x.json").write_text(json.dumps(board))
    assert [q.expr for q in log_queries([tmp_path / "x.json"])] == ['{service_name="a"}']
    assert list(dashboard_queries([tmp_path / "x.json"])) == []
    board["panels"][0]["datasource"] = {"type": "prometheus", "uid": "${datasource}"}
    (tmp_path / "x.json").write_text(json.dumps(board))
    assert [q.expr for q in dashboard_queries([tmp_path / "x.json"])] == ['{service_name="a"}']


@pytest.mark.parametrize("board", boards(), ids=lambda b: b["uid"])
def test_panels_have_units_descriptions_thresholds_and_unique_ids(board):
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    for panel in panels(board):
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), panel["title"]
        assert panel.get("description"), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs == [chr(ord("A") + i) for i in range(len(refs))]
        if panel["type"] == "stat":
            steps = defaults["thresholds"]["steps"]
            assert steps[0]["value"] is None and len(steps) >= 1, panel["title"]


def overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


@pytest.mark.parametrize("board", boards(), ids=lambda b: b["uid"])
def test_panels_sit_on_the_grid_without_overlapping(board):
    grid = [p["gridPos"] for p in board["panels"]]
    for pos in grid:
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, pos
    for i, a in enumerate(grid):
        assert not any(overlaps(a, b) for b in grid[i + 1:]), a


def test_the_overlap_check_sees_an_overlap():
    assert overlaps({"x": 0, "y": 0, "w": 12, "h": 8}, {"x": 11, "y": 7, "w": 4, "h": 4})
    assert not overlaps({"x": 0, "y": 0, "w": 12, "h": 8}, {"x": 12, "y": 0, "w": 12, "h": 8})


def test_the_overview_shows_what_the_issue_asks_for():
    overview = {q.panel: q for q in dashboard_queries([HERE / "lookout-overview.json"])}
    for title in ("Request rate per route", "Error ratio per route (5xx)", "Requests in flight",
                  "Database statement latency (p95, p99)", "Pods: ready, desired, autoscaler maximum",
                  "CPU per pod", "Memory per pod", "Garbage collections per pod"):
        assert title in overview
    latency = [q for q in dashboard_queries([HERE / "lookout-overview.json"])
               if q.panel == "Request latency per route (p50, p95, p99)"]
    assert [q.expr.split(",")[0] for q in latency] == [
        "histogram_quantile(0.5", "histogram_quantile(0.95", "histogram_quantile(0.99"]
    assert [q.exemplar for q in latency] == [False, False, True]


def test_the_slo_dashboard_shows_every_alert_window():
    slo = load_slo()
    exprs = " ".join(q.expr for q in dashboard_queries([HERE / "lookout-slo.json"]))
    for alert in slo.burn_rate_alerts:
        for window in (alert.long, alert.short):
            for objective in ("availability", "latency"):
                assert f'lookout:sli_error:ratio_rate{window}{{slo="{objective}"}}' in exprs
    assert f"lookout:sli_error:ratio_rate{slo.window}" in exprs


def test_the_dependencies_dashboard_shows_the_database_and_the_store():
    exprs = [q.expr for q in dashboard_queries([HERE / "lookout-dependencies.json"])]
    used = " ".join(exprs)
    for metric in ("pg_stat_database_numbackends", "pg_settings_max_connections",
                   "pg_stat_database_xact_commit", "pg_stat_database_xact_rollback", "pg_locks_count",
                   "pg_stat_activity_max_tx_duration",
                   "redis_memory_used_bytes", "redis_memory_max_bytes", "redis_evicted_keys_total",
                   "redis_rejected_connections_total", "redis_commands_processed_total"):
        assert metric in used, metric
    jobs = ('job="lookout-db-metrics"', 'job="lookout-ratelimit-metrics"')
    assert all(any(job in e for job in jobs) for e in exprs)


def test_the_slo_dashboard_shows_the_probe_of_the_public_endpoint():
    exprs = [(q.panel, q.expr) for q in dashboard_queries([HERE / "lookout-slo.json"])]
    assert ("Reachable", 'min(probe_success{job="lookout-probe"})') in exprs
    assert any(p == "Probe duration" and 'probe_duration_seconds{job="lookout-probe"}' in e for p, e in exprs)


def test_dashboard_files_are_plain_sorted_json():
    for path in dashboard_files():
        text = Path(path).read_text()
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_each_service_board_is_its_slo_entry_over_its_own_job(tmp_path):
    """A third service is an entry in slo.yaml: its board has its sections, and every series of
    its own (not the broker's, the relay's or Kubernetes') carries its job."""
    from dashboards.generate.boards import service_board

    edited = tmp_path / "slo.yaml"
    edited.write_text((HERE / "slo.yaml").read_text().replace("services:\n", """services:
  - name: lookout-billing
    title: Billing
    dashboard: lookout-billing
    job: lookout-billing-metrics
    deployment: lookout-billing
    container: billing
    sections: [pods, logs]
""", 1))
    slo = load_slo(edited)
    assert [s.dashboard for s in slo.services] == ["lookout-billing", "lookout-overview", "lookout-notifier"]
    board = json.loads(json.dumps(service_board(slo, slo.services[0]).build(), default=lambda o: o.__dict__))
    titles = [p["title"] for p in board["panels"]]
    assert titles[0] == "Pods" and "Warnings and errors" in titles and "Request rate per route" not in titles
    assert board["uid"] == "lookout-billing"
    used = json.dumps(board)
    assert 'job=\\"lookout-billing-metrics\\"' in used and 'job=\\"lookout-metrics\\"' not in used
    assert 'horizontalpodautoscaler=\\"lookout-billing\\"' in used  # the HPA defaults to the deployment


@pytest.mark.parametrize("entry, named", [
    ("sections: [pods, graphs]", "graphs"),
    ("objectives: [throughput]", "throughput"),
])
def test_a_service_entry_naming_an_unknown_section_or_objective_is_refused(tmp_path, entry, named):
    edited = tmp_path / "slo.yaml"
    key = entry.split(":")[0]
    text = (HERE / "slo.yaml").read_text()
    line = next(line for line in text.splitlines() if line.strip().startswith(f"{key}:"))
    edited.write_text(text.replace(line, f"    {entry}", 1))
    with pytest.raises(ValueError, match=f"service lookout names unknown objectives or sections.*{named}"):
        load_slo(edited)


def test_the_boards_show_the_broker_the_outbox_and_the_consumer():
    notifier = " ".join(q.expr for q in dashboard_queries([HERE / "lookout-notifier.json"]))
    for metric in ("rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked",
                   "rabbitmq_queue_consumers", "rabbitmq_global_messages_received_total",
                   "rabbitmq_global_messages_delivered_total",
                   "lookout_notifier_consumer_lag", "lookout_notifier_dead_letters_total"):
        assert metric in notifier, metric
    assert 'queue="notifier.dead-letters"' in notifier and 'job="lookout-broker-metrics"' in notifier
    overview = " ".join(q.expr for q in dashboard_queries([HERE / "lookout-overview.json"]))
    for metric in ("lookout_outbox_backlog", "lookout_outbox_oldest_unpublished_age_seconds",
                   "lookout_outbox_publish_failures_total", "lookout_relay_broker_connected"):
        assert f'{metric}{{job="lookout-relay-metrics"}}' in overview, metric


def test_each_service_board_counts_only_its_own_pods():
    """All services' containers are named alike: a board's pod matcher must still tell them apart
    (Prometheus anchors =~ at both ends, as fullmatch does)."""
    from dashboards.generate.boards import service_target

    pods = {s.name: re.search(r'pod=~"([^"]+)"', service_target(s).pods).group(1)
            for s in load_slo().services}
    names = {"lookout": "lookout-7d9f8c6b5d-x2v4k",
             "lookout-notifier": "lookout-notifier-consumer-5c7b9d-q8w2z"}
    for service, pattern in pods.items():
        for owner, pod in names.items():
            assert bool(re.fullmatch(pattern, pod)) == (owner == service), (service, pod)
