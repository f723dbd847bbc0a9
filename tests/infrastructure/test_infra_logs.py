"""Logs: Loki (one process, retention, volume from the stack), the log-collecting DaemonSet's
pipeline, Grafana's links between lines and traces, on every stack."""

from __future__ import annotations

from typing import Any

import pytest

from infra.components.monitoring_values import (
    LOG_FIELDS,
    LOG_LABELS,
    LOGS_DATASOURCE_UID,
    RELEASE,
    TRACES_DATASOURCE_UID,
)
from infra.config import ConfigError
from infra.mockrun import Rendered, render

STACKS = ("dev", "staging", "prod")


@pytest.fixture(scope="module")
def stacks() -> dict[str, Rendered]:
    return {stack: render(stack) for stack in STACKS}


def values(rendered: Rendered, name: str) -> dict[str, Any]:
    return next(r for r in rendered.releases if r["name"] == name)["values"]


def operators(rendered: Rendered) -> list[dict[str, Any]]:
    return values(rendered, "otel-logs")["alternateConfig"]["receivers"]["filelog"]["operators"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_runs_loki_as_one_process_with_retention_the_compactor_enforces(stacks, stack):
    loki = values(stacks[stack], "loki")
    assert loki["deploymentMode"] == "Monolithic" and loki["singleBinary"]["replicas"] == 1
    assert all(loki[target]["replicas"] == 0 for target in ("read", "write", "backend"))
    assert not any(loki[part]["enabled"] for part in ("gateway", "chunksCache", "resultsCache", "lokiCanary",
                                                       "test", "minio"))
    config = loki["loki"]
    [schema] = config["schemaConfig"]["configs"]
    assert (schema["store"], schema["schema"], schema["object_store"]) == ("tsdb", "v13", "filesystem")
    assert config["storage"]["type"] == "filesystem"
    assert config["compactor"]["retention_enabled"] is True and config["compactor"]["delete_request_store"]
    assert config["limits_config"]["allow_structured_metadata"] is True


def test_retention_and_volume_come_from_the_stack(stacks):
    dev, staging, prod = (values(stacks[s], "loki") for s in STACKS)
    assert dev["singleBinary"]["persistence"] == {"enabled": False}  # the pod's own disk
    assert staging["singleBinary"]["persistence"] == {"enabled": True, "size": "5Gi"}
    assert prod["singleBinary"]["persistence"] == {"enabled": True, "size": "20Gi"}
    retention = [v["loki"]["limits_config"]["retention_period"] for v in (dev, staging, prod)]
    assert retention == ["168h", "168h", "31d"]
    classed = values(render("prod", {"logStorageClass": "fast-ssd"}), "loki")
    assert classed["singleBinary"]["persistence"]["storageClass"] == "fast-ssd"


@pytest.mark.parametrize(("change", "error"), [
    ({"logRetention": "36h"}, "logRetention: '36h' is not a whole number of days"),
    ({"logRetention": "a week"}, "logRetention: 'a week' is not a whole number of days"),
    ({"logRetention": "0d"}, "logRetention"),
    ({"logStorageSize": "20 gigs"}, "logStorageSize"),
])
def test_a_bad_log_setting_fails_naming_it(change, error):
    with pytest.raises(ConfigError, match=error):
        render("dev", change)


def test_labels_are_bounded_and_ids_stay_metadata(stacks):
    """Loki makes labels of the listed resource attributes only (none of its default list);
    the ids are record attributes, which Loki keeps as structured metadata."""
    otlp = values(stacks["prod"], "loki")["loki"]["limits_config"]["otlp_config"]["resource_attributes"]
    assert otlp["ignore_defaults"] is True
    [rule] = otlp["attributes_config"]
    assert rule["action"] == "index_label" and set(rule["attributes"]) == set(LOG_LABELS)
    assert not {"trace_id", "span_id", "request_id", "k8s.pod.name", "k8s.pod.uid"} & set(rule["attributes"])
    config = values(stacks["prod"], "otel-logs")["alternateConfig"]
    assert config["processors"]["groupbyattrs"]["keys"] == ["level"]  # only level goes up to the resource
    assert {"trace_id", "span_id", "request_id"} <= set(LOG_FIELDS)


def test_the_log_collector_is_a_daemonset_reading_pod_logs_read_only(stacks):
    collector = values(stacks["dev"], "otel-logs")
    assert collector["mode"] == "daemonset" and collector["command"]["name"] == "otelcol-contrib"
    mounts = {m["name"]: m for m in collector["extraVolumeMounts"]}
    volumes = {v["name"]: v for v in collector["extraVolumes"]}
    assert volumes["pod-logs"]["hostPath"]["path"] == "/var/log/pods" == mounts["pod-logs"]["mountPath"]
    assert mounts["pod-logs"]["readOnly"] is True
    assert collector["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    config = collector["alternateConfig"]
    filelog = config["receivers"]["filelog"]
    assert filelog["include"] == ["/var/log/pods/*/*/*.log"]
    assert filelog["exclude"] == ["/var/log/pods/monitoring_otel-logs-*/*/*.log"]  # never its own lines
    assert filelog["storage"] == "file_storage" in config["service"]["extensions"]
    assert config["extensions"]["file_storage"]["directory"] == mounts["checkpoints"]["mountPath"]
    assert config["exporters"] == {"otlphttp/loki": {"endpoint": "http://loki.monitoring:3100/otlp"}}
    pipeline = config["service"]["pipelines"]["logs"]
    assert pipeline["receivers"] == ["filelog"] and pipeline["exporters"] == ["otlphttp/loki"]
    assert set(pipeline["processors"]) == set(config["processors"])
    assert "logs" not in values(stacks["dev"], "otel-collector")["alternateConfig"]["service"]["pipelines"]


def test_the_operator_pipeline_parses_cri_then_json_then_trace_context_and_severity(stacks):
    ops = operators(stacks["dev"])
    assert [op["type"] for op in ops] == ["container", "json_parser", "trace_parser", "severity_parser",
                                          "move", "remove"]
    container, json_parser, trace, severity, move, remove = ops
    assert container["add_metadata_from_filepath"] is True
    assert (json_parser["parse_from"], json_parser["parse_to"]) == ("body", "attributes")
    assert trace["trace_id"]["parse_from"] == "attributes.trace_id"
    assert trace["span_id"]["parse_from"] == "attributes.span_id"
    assert severity["parse_from"] == "attributes.level"
    assert (move["from"], move["to"]) == ("attributes.message", "body")
    assert remove["field"] == "attributes.time"
    # Other containers' lines are not JSON: every step after the CRI parser lets them through.
    assert all(op["on_error"] == "send_quiet" for op in ops[1:])


def test_grafana_links_lines_to_traces_and_spans_to_lines(stacks):
    sources = {s["type"]: s for s in values(stacks["dev"], RELEASE)["grafana"]["additionalDataSources"]}
    loki, tempo = sources["loki"], sources["tempo"]
    assert (loki["uid"], loki["url"]) == (LOGS_DATASOURCE_UID, "http://loki.monitoring:3100")
    [field] = loki["jsonData"]["derivedFields"]
    assert field["matcherType"] == "label" and field["matcherRegex"] == "trace_id"
    assert field["datasourceUid"] == TRACES_DATASOURCE_UID == tempo["uid"]
    assert field["url"] == "$${__value.raw}"  # "$$": Grafana expands ${...} in provisioned files
    to_logs = tempo["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == LOGS_DATASOURCE_UID and to_logs["customQuery"] is True
    assert '| trace_id="$${__trace.traceId}"' in to_logs["query"]  # structured metadata, not |= on the line


def test_without_a_log_store_nothing_of_it_is_installed():
    rendered = render("dev", {"logStore": False})
    assert not {"loki", "otel-logs"} & {r["name"] for r in rendered.releases}
    sources = values(rendered, RELEASE)["grafana"]["additionalDataSources"]
    assert [s["type"] for s in sources] == ["tempo"] and "jsonData" not in sources[0]


def test_no_network_policy_stands_between_collector_grafana_and_loki(stacks):
    """No NetworkPolicy of the monitoring namespace selects the log collector's, Grafana's or
    Loki's pods, so the collector and Grafana reach Loki. Each policy there names the one Helm
    release whose pods it selects (the prometheus-adapter's); a policy for these releases must
    open the paths (this test then needs the rules it allows)."""
    open_releases = {"loki", "otel-logs", "kube-prometheus-stack"}
    for rendered in stacks.values():
        for policy in rendered.find("NetworkPolicy"):
            if policy["metadata"]["namespace"] == "monitoring":
                release = policy["metadata"].get("annotations", {}).get("lookout.dev/pods-of-helm-release")
                assert release and release not in open_releases, policy["metadata"]["name"]


def test_the_log_panels_select_the_service_name_its_pods_carry(stacks):
    """The collector makes service_name of the pods' app.kubernetes.io/name: the dashboards'
    Target.service must be the server pods' label, or the log panels stay empty."""
    from dashboards.generate.target import TARGET

    for rendered in stacks.values():
        workloads = rendered.find("Deployment") + rendered.find("Rollout")
        names = {w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") for w in workloads
                 if w["metadata"].get("namespace") == TARGET.namespace}
        assert TARGET.service in names


def test_the_daemonsets_host_paths_are_admitted_where_it_runs(stacks):
    """hostPath volumes are refused by the baseline and restricted Pod Security levels: the log
    collector lives in the monitoring namespace, which enforces privileged (node-exporter's need)
    and still audits restricted. No other namespace of the program is relaxed for it."""
    for rendered in stacks.values():
        namespaces = {n["metadata"]["name"]: n["metadata"]["labels"] for n in rendered.find("Namespace")}
        assert namespaces["monitoring"]["pod-security.kubernetes.io/enforce"] == "privileged"
        assert namespaces["monitoring"]["pod-security.kubernetes.io/audit"] == "restricted"
        relaxed = {name for name, labels in namespaces.items()
                   if labels.get("pod-security.kubernetes.io/enforce") not in (None, "restricted")}
        assert relaxed <= {"monitoring", "cnpg-system", "argo-rollouts"}, relaxed
        collector = values(rendered, "otel-logs")
        host_paths = {v["hostPath"]["path"] for v in collector["extraVolumes"]}
        assert host_paths == {"/var/log/pods", "/var/lib/otel-logs"}
