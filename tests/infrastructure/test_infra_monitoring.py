"""Monitoring: the stack and collector releases, and the repo's dashboards and rules mapped one to one."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from dashboards import dashboard_files, duration_seconds, load_slo, rule_files
from infra.components import AlertingArgs, Monitoring, MonitoringArgs, ScrapeTarget
from infra.components.alerting import PAGERDUTY_KEY, RECEIVERS_SECRET, SLACK_KEY
from infra.components.monitoring import RELEASE, dashboard_name, rule_groups
from infra.components.monitoring_values import TRACES_DATASOURCE_UID, prometheus_retention_size
from infra.mockrun import LB_ADDRESS, Rendered, render, run_program

TARGET = ScrapeTarget(
    "lookout", "lookout", {"app.kubernetes.io/name": "lookout", "app.kubernetes.io/component": "server"}
)
PINNED = re.compile(r"^\d+\.\d+\.\d+$")


def build(dashboards: tuple[Path, ...] = (), rules: tuple[Path, ...] = (), **changes: Any) -> Rendered:
    args = dataclasses.replace(
        MonitoringArgs(
            namespace="monitoring", dashboard_files=dashboards, rule_files=rules, targets=(TARGET,)
        ),
        **changes,
    )

    def program() -> None:
        monitoring = Monitoring("monitoring", args)
        pulumi.export("grafana", monitoring.grafana_address)
        pulumi.export("password", monitoring.grafana_admin_password)

    return run_program(program, "test")


@pytest.fixture(scope="module")
def synthetic(synthetic_files) -> Rendered:
    return build(synthetic_files.dashboards, synthetic_files.rules)


def dashboard_maps(rendered: Rendered) -> list[dict[str, Any]]:
    return [o for o in rendered.find("ConfigMap") if o["metadata"]["labels"].get("grafana_dashboard") == "1"]


def test_every_real_dashboard_and_rule_file_is_deployed():
    """Grows with the repo: each dashboards/*.json and dashboards/rules/*.yaml lands in the cluster."""
    rendered = build(tuple(dashboard_files()), tuple(rule_files()))
    carried = {name: text for m in dashboard_maps(rendered) for name, text in m["data"].items()}
    assert sorted(carried) == sorted(p.name for p in dashboard_files())
    for path in dashboard_files():
        assert json.loads(carried[path.name]) == json.loads(path.read_text())
    groups = [g for r in rendered.find("PrometheusRule") for g in r["spec"]["groups"]]
    assert groups == [g for p in rule_files() for g in yaml.safe_load(p.read_text())["groups"]]


def test_synthetic_dashboards_become_one_labelled_configmap_each(synthetic: Rendered, synthetic_files):
    maps = dashboard_maps(synthetic)
    assert sorted(m["metadata"]["name"] for m in maps) == [
        "dashboard-lookout-overview",
        "dashboard-lookout-slo",
    ]
    for path in synthetic_files.dashboards:
        (carrier,) = [m for m in maps if m["metadata"]["name"] == dashboard_name(path)]
        assert carrier["data"] == {path.name: path.read_text()}
        assert carrier["metadata"]["namespace"] == "monitoring"


def test_synthetic_rule_files_become_one_prometheus_rule(synthetic: Rendered, synthetic_files):
    rule = synthetic.one("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == RELEASE
    assert rule["spec"]["groups"] == [
        g for p in synthetic_files.rules for g in yaml.safe_load(p.read_text())["groups"]
    ]
    assert "monitoring-kube-prometheus-stack" in synthetic.depends_on["monitoring-rules"], (
        "the CRD comes first"
    )


def test_no_rule_files_no_empty_prometheus_rule():
    assert build().find("PrometheusRule") == []


def test_a_broken_dashboard_stops_the_deploy(tmp_path: Path):
    (tmp_path / "broken.json").write_text('{"title": ')
    with pytest.raises(Exception, match="Expecting value"):
        build((tmp_path / "broken.json",))


def test_rule_group_names_must_be_unique(tmp_path: Path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(yaml.safe_dump({"groups": [{"name": "same", "rules": []}]}))
    with pytest.raises(ValueError, match="unique"):
        rule_groups([tmp_path / "a.yaml", tmp_path / "b.yaml"])


def test_service_monitor_scrapes_the_http_port_with_the_release_label(synthetic: Rendered):
    monitor = synthetic.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == RELEASE
    assert monitor["spec"] == {
        "namespaceSelector": {"matchNames": ["lookout"]},
        "selector": {"matchLabels": dict(TARGET.service_labels)},
        "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
    }


def test_helm_charts_are_pinned_and_configured(synthetic: Rendered):
    releases = {r["name"]: r for r in synthetic.releases}
    assert set(releases) == {RELEASE, "otel-collector", "tempo", "loki", "otel-logs"}
    for release in releases.values():
        assert PINNED.match(release["version"]), release["version"]
        assert release["repositoryOpts"]["repo"].startswith("https://")
        assert release["namespace"] == "monitoring"
    stack = releases[RELEASE]["values"]
    assert stack["grafana"]["sidecar"]["dashboards"] == {
        "enabled": True,
        "label": "grafana_dashboard",
        "labelValue": "1",
    }
    admin = synthetic.one("Secret", "grafana-admin")
    assert stack["grafana"]["admin"]["existingSecret"] == admin["metadata"]["name"]
    assert "exemplar-storage" in stack["prometheus"]["prometheusSpec"]["enableFeatures"]
    collector = releases["otel-collector"]["values"]
    assert collector["mode"] == "deployment"
    assert collector["alternateConfig"]["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    assert collector["podSecurityContext"]["runAsNonRoot"] is True


def _release_values(rendered: Rendered, name: str) -> dict[str, Any]:
    return next(r for r in rendered.releases if r["name"] == name)["values"]


def test_alert_receivers_come_from_a_secret_that_alertmanager_mounts():
    rendered = build(alerting=AlertingArgs(
        pagerduty_routing_key="pd-routing-key-value",
        slack_webhook_url="https://hooks.slack.com/services/T0/B0/slack-value"))
    assert set(rendered.one("Secret", RECEIVERS_SECRET)["stringData"]) == {PAGERDUTY_KEY, SLACK_KEY}
    alertmanager = _release_values(rendered, RELEASE)["alertmanager"]
    assert alertmanager["alertmanagerSpec"]["secrets"] == [RECEIVERS_SECRET]
    text = json.dumps(alertmanager)
    assert "pd-routing-key-value" not in text and "slack-value" not in text
    receivers = {r["name"]: r for r in alertmanager["config"]["receivers"]}
    files = f"/etc/alertmanager/secrets/{RECEIVERS_SECRET}"
    assert receivers["pager"]["pagerduty_configs"][0]["routing_key_file"] == f"{files}/{PAGERDUTY_KEY}"
    assert receivers["chat"]["slack_configs"][0]["api_url_file"] == f"{files}/{SLACK_KEY}"
    assert "monitoring-alertmanager-receivers" in rendered.depends_on["monitoring-kube-prometheus-stack"]


def test_the_watchdog_pings_the_heartbeat_url():
    rendered = build(alerting=AlertingArgs(heartbeat_url="https://hc-ping.com/0f0e0d0c"))
    config = _release_values(rendered, RELEASE)["alertmanager"]["config"]
    (heartbeat,) = [r for r in config["receivers"] if r["name"] == "heartbeat"]
    assert heartbeat["webhook_configs"] == [{"url": "https://hc-ping.com/0f0e0d0c", "send_resolved": False}]


def test_without_receivers_the_secret_is_empty_and_nothing_is_sent(synthetic: Rendered):
    assert not synthetic.one("Secret", RECEIVERS_SECRET).get("stringData")
    config = _release_values(synthetic, RELEASE)["alertmanager"]["config"]
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers == {"null": {"name": "null"}, "pager": {"name": "pager"}, "chat": {"name": "chat"},
                         "heartbeat": {"name": "heartbeat"}}


def test_idle_stacks_mute_no_traffic_and_production_mutes_nothing(render_case):
    """The stack's alertsMuted reach Alertmanager's routes (their routing is tested with amtool in
    tests/test_alerting.py): dev and staging, idle between uses, mute LookoutNoTraffic; production
    mutes nothing."""
    def muted(stack: str) -> list[list[str]]:
        rendered = render("staging") if stack == "staging" else render_case(stack)  # CASES has no staging
        routes = _release_values(rendered, RELEASE)["alertmanager"]["config"]["route"]["routes"]
        return [r["matchers"] for r in routes
                if r["receiver"] == "null" and r["matchers"] != ['alertname="InfoInhibitor"']]

    assert muted("dev") == muted("staging") == [['alertname="LookoutNoTraffic"']]
    assert muted("prod") == []


def test_alertmanager_runs_alone_by_default_and_as_a_guarded_pair_in_production(synthetic, render_case):
    alone = _release_values(synthetic, RELEASE)["alertmanager"]
    assert alone["alertmanagerSpec"]["replicas"] == 1 and alone["podDisruptionBudget"]["enabled"] is False
    pair = _release_values(render_case("prod"), RELEASE)["alertmanager"]
    assert pair["alertmanagerSpec"]["replicas"] == 2
    assert pair["podDisruptionBudget"] == {"enabled": True, "minAvailable": 1}


CONTROL_PLANE = ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy")


def test_the_control_plane_is_left_alone_unless_the_cluster_exposes_it(synthetic: Rendered):
    hidden = _release_values(synthetic, RELEASE)
    assert [hidden[c] for c in CONTROL_PLANE] == [{"enabled": False}] * len(CONTROL_PLANE)
    exposed = _release_values(build(control_plane=True), RELEASE)
    assert [exposed[c] for c in CONTROL_PLANE] == [{"enabled": True}] * len(CONTROL_PLANE)


def test_without_volumes_prometheus_and_tempo_keep_data_on_the_pods_disk(synthetic: Rendered):
    spec = _release_values(synthetic, RELEASE)["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "7d"
    assert "storageSpec" not in spec and "retentionSize" not in spec
    assert _release_values(synthetic, "tempo")["persistence"] == {"enabled": False}


def test_volumes_keep_prometheus_and_tempo_data_and_prometheus_stays_under_its_volume():
    rendered = build(prometheus_storage_size="50Gi", trace_storage_size="10Gi")
    spec = _release_values(rendered, RELEASE)["prometheus"]["prometheusSpec"]
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}}
    assert spec["retentionSize"] == "40960MB"  # 80% of 50 GiB; Prometheus's MB are MiB
    persistence = _release_values(rendered, "tempo")["persistence"]
    assert persistence == {"enabled": True, "accessModes": ["ReadWriteOnce"], "size": "10Gi"}


@pytest.mark.parametrize(("volume", "limit"), [("50Gi", "40960MB"), ("1Gi", "819MB"), ("100G", "76293MB")])
def test_prometheus_size_limit_is_four_fifths_of_its_volume(volume: str, limit: str):
    assert prometheus_retention_size(volume) == limit


def test_production_prometheus_keeps_the_whole_slo_window_on_a_volume(render_case):
    """The SLO dashboard's 30-day budget and the 3-day burn-rate alert read this far back."""
    spec = _release_values(render_case("prod"), RELEASE)["prometheus"]["prometheusSpec"]
    assert duration_seconds(spec["retention"]) >= duration_seconds(load_slo().window)
    assert spec["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]
    assert spec["retentionSize"]


def test_traces_go_to_tempo_which_grafana_reads_for_exemplars(synthetic: Rendered):
    collector = _release_values(synthetic, "otel-collector")["alternateConfig"]
    assert collector["exporters"] == {"otlphttp/tempo": {"endpoint": "http://tempo.monitoring:4318"}}
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlphttp/tempo"]
    config = _release_values(synthetic, "tempo")["config"]  # a template: its receivers are plain YAML
    distributor = yaml.safe_load(config.split("distributor:\n")[1].split("\ningester:")[0])
    assert distributor == {"receivers": {"otlp": {"protocols": {"http": {"endpoint": "0.0.0.0:4318"}}}}}
    grafana = _release_values(synthetic, RELEASE)["grafana"]
    [source] = [s for s in grafana["additionalDataSources"] if s["type"] == "tempo"]
    assert (source["type"], source["uid"], source["url"]) == ("tempo", TRACES_DATASOURCE_UID,
                                                             "http://tempo.monitoring:3100")
    assert grafana["sidecar"]["datasources"]["exemplarTraceIdDestinations"]["datasourceUid"] == source["uid"]


def test_an_external_trace_store_gets_a_copy():
    rendered = build(traces_export_endpoint="https://traces.example.com:4318")
    exporters = _release_values(rendered, "otel-collector")["alternateConfig"]["exporters"]
    assert exporters["otlphttp/external"] == {"endpoint": "https://traces.example.com:4318"}
    assert "otlphttp/tempo" in exporters


def test_without_a_store_the_collector_logs_and_grafana_has_no_trace_source():
    rendered = build(trace_store=False)
    assert "tempo" not in {r["name"] for r in rendered.releases}
    assert _release_values(rendered, "otel-collector")["alternateConfig"]["exporters"] == {
        "debug": {"verbosity": "basic"}}
    sources = _release_values(rendered, RELEASE)["grafana"]["additionalDataSources"]
    assert [s["type"] for s in sources] == ["loki"] and "jsonData" not in sources[0]  # no trace links


def test_grafana_address_and_password(synthetic: Rendered):
    assert synthetic.outputs["grafana"] == "http://grafana.monitoring.svc.cluster.local"
    assert synthetic.outputs["password"] == "[secret]"
    assert build(grafana_service_type="LoadBalancer").outputs["grafana"] == f"http://{LB_ADDRESS}"


def test_monitoring_namespace_admits_node_exporter_but_audits_restricted(synthetic: Rendered):
    labels = synthetic.one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_collector_peer_points_at_the_otlp_http_port():
    found: dict[str, Any] = {}

    def program() -> None:
        found["m"] = Monitoring("m", MonitoringArgs("observability", (), (), ()))

    run_program(program, "test")
    assert found["m"].collector_endpoint == "http://otel-collector.observability:4318"
    assert (found["m"].collector.port, found["m"].collector.namespace) == (4318, "observability")
