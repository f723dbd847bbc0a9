"""ObservableService, built on its own under Pulumi's mocks with a service that is not Lookout."""

from __future__ import annotations

import dataclasses
from typing import Any

import pulumi
import pytest

from infra.components import ObservableService, Peer, Resources, Scaling, ServiceArgs, Shutdown, WritableDir
from infra.mockrun import LB_ADDRESS, Rendered, run_program

BASE = ServiceArgs(
    namespace="billing",
    image="billing:1.2.3",
    resources=Resources("100m", "500m", "256Mi", "256Mi"),
    scaling=Scaling(
        min_replicas=2, max_replicas=6, target_cpu_utilization=60, scale_down_stabilization_seconds=120
    ),
    shutdown=Shutdown(pre_stop_seconds=5, graceful_timeout=10, termination_grace_period_seconds=30),
    settings={
        "LOOKOUT_ENV": "production",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.monitoring:4318",
    },
    secrets={"SECRET_KEY": "s" * 40, "DATABASE_URL": "postgresql://u:p@db:5432/billing"},
    scrape_namespace="monitoring",
    egress=(
        Peer(port=5432, cidrs=("10.20.0.0/16",)),
        Peer(
            port=4318,
            namespace="monitoring",
            pod_labels={"app.kubernetes.io/name": "opentelemetry-collector"},
        ),
    ),
    migration_command=("flask", "--app", "app", "db", "upgrade"),
)


def build(**changes: Any) -> Rendered:
    args = dataclasses.replace(BASE, **changes)

    def program() -> None:
        service = ObservableService("billing", args)
        pulumi.export("address", service.address)
        pulumi.export("url", service.url)
        pulumi.export("namespace", service.namespace)

    return run_program(program, "test")


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return build()


def pod(rendered: Rendered, kind: str = "Deployment") -> dict[str, Any]:
    return rendered.one(kind)["spec"]["template"]["spec"]


def test_component_token_and_child_names(rendered: Rendered):
    assert rendered.components["billing"] == "lookout:service:ObservableService"
    children = [name for name in rendered.depends_on if name != "billing"]
    assert children and all(name.startswith("billing-") for name in children)


def test_namespace_is_labelled_restricted(rendered: Rendered):
    labels = rendered.one("Namespace")["metadata"]["labels"]
    assert {labels[f"pod-security.kubernetes.io/{mode}"] for mode in ("enforce", "audit", "warn")} == {
        "restricted"
    }


def test_deployment_leaves_replicas_to_the_hpa_and_never_drops_below_capacity(rendered: Rendered):
    spec = rendered.one("Deployment")["spec"]
    assert "replicas" not in spec
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = rendered.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "billing"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}},
        }
    ]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120


def test_requests_per_second_adds_a_pods_metric():
    metrics = build(scaling=dataclasses.replace(BASE.scaling, target_requests_per_second=50)).one(
        "HorizontalPodAutoscaler"
    )["spec"]["metrics"]
    assert metrics[1] == {
        "type": "Pods",
        "pods": {
            "metric": {"name": "http_server_requests_per_second"},
            "target": {"type": "AverageValue", "averageValue": "50"},
        },
    }


def test_probes_and_graceful_shutdown(rendered: Rendered):
    container = pod(rendered)["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"},
                                  {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert pod(rendered)["terminationGracePeriodSeconds"] == 30
    assert "command" not in container, "the image's own command (gunicorn as PID 1) runs"


def test_settings_go_to_a_configmap_and_secrets_are_files(rendered: Rendered):
    settings = rendered.one("ConfigMap")["data"]
    assert settings == {**BASE.settings, "HOST": "0.0.0.0", "PORT": "8000", "METRICS_PORT": "9100",
                        "GUNICORN_GRACEFUL_TIMEOUT": "10"}
    secret = rendered.one("Secret")
    assert secret["stringData"] == dict(BASE.secrets) and secret["type"] == "Opaque"
    container = pod(rendered)["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": rendered.one("ConfigMap")["metadata"]["name"]}}]
    assert container["env"] == [
        {"name": "DATABASE_URL_FILE", "value": "/var/run/secrets/lookout/DATABASE_URL"},
        {"name": "SECRET_KEY_FILE", "value": "/var/run/secrets/lookout/SECRET_KEY"},
    ]
    volumes = {v["name"]: v for v in pod(rendered)["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert {"name": "secrets", "mountPath": "/var/run/secrets/lookout", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert not any(s in str(container) + str(settings) for s in BASE.secrets.values()), (
        "no secret value outside the Secret"
    )


def test_root_filesystem_is_read_only_with_writable_scratch_dirs():
    dirs = (WritableDir("tmp", "/tmp", "64Mi", in_memory=True), WritableDir("metrics", "/var/lib/m", "256Mi"))
    spec = pod(build(writable_dirs=dirs))
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi", "medium": "Memory"}} in spec["volumes"]
    assert {"name": "metrics", "emptyDir": {"sizeLimit": "256Mi"}} in spec["volumes"]
    assert {"name": "metrics", "mountPath": "/var/lib/m"} in container["volumeMounts"]


def test_pods_spread_over_zones_and_nodes(rendered: Rendered):
    keys = [c["topologyKey"] for c in pod(rendered)["topologySpreadConstraints"]]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]


def test_migrations_run_in_a_job_per_image_before_the_rollout(rendered: Rendered):
    job = rendered.one("Job")
    assert job["metadata"]["name"].startswith("billing-migrate-")
    assert job["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Complete"
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == list(BASE.migration_command)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert "billing-migrations" in rendered.depends_on["billing-deployment"]
    assert build(image="billing:1.2.4").one("Job")["metadata"]["name"] != job["metadata"]["name"]


def test_no_migration_command_no_job():
    rendered = build(migration_command=None)
    assert rendered.find("Job") == []
    assert rendered.depends_on["billing-deployment"] == ["billing-namespace"]


def test_load_balancer_with_source_ranges(rendered: Rendered):
    spec = build(source_ranges=("198.51.100.0/24",)).one("Service", "billing")["spec"]
    assert spec["type"] == "LoadBalancer" and spec["loadBalancerSourceRanges"] == ["198.51.100.0/24"]
    assert spec["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert "loadBalancerSourceRanges" not in rendered.one("Service", "billing")["spec"]
    assert rendered.outputs["address"] == LB_ADDRESS
    assert rendered.outputs["url"] == "http://billing.billing.svc.cluster.local:80"


def test_the_load_balancer_keeps_client_addresses_unless_told_otherwise(rendered: Rendered):
    """Local: pods see the client's address, so per-address rate limits and access logs mean a
    client and not a node."""
    assert rendered.one("Service", "billing")["spec"]["externalTrafficPolicy"] == "Local"
    cluster = build(external_traffic_policy="Cluster").one("Service", "billing")["spec"]
    assert cluster["externalTrafficPolicy"] == "Cluster"


def test_cluster_ip_for_local_clusters():
    rendered = build(service_type="ClusterIP", source_ranges=("198.51.100.0/24",))
    assert rendered.one("Service", "billing")["spec"]["type"] == "ClusterIP"
    assert "loadBalancerSourceRanges" not in rendered.one("Service", "billing")["spec"]
    assert "externalTrafficPolicy" not in rendered.one("Service", "billing")["spec"]  # external only
    assert rendered.outputs["address"] == "billing.billing.svc.cluster.local"


def test_metrics_have_a_cluster_internal_service_of_their_own(rendered: Rendered):
    metrics = rendered.one("Service", "billing-metrics")["spec"]
    assert metrics["type"] == "ClusterIP"
    assert metrics["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}]
    assert [p["name"] for p in rendered.one("Service", "billing")["spec"]["ports"]] == ["http"]


def test_network_policy_admits_only_what_the_service_needs(rendered: Rendered):
    spec = rendered.one("NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "billing"}}
    assert spec["ingress"][1] == {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "ports": [{"protocol": "TCP", "port": 9100}],  # scrapes reach the metrics port only
    }
    assert spec["ingress"][0] == {"ports": [{"protocol": "TCP", "port": 8000}]}
    egress = spec["egress"]
    assert egress[0]["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert egress[1] == {
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }
    assert egress[2]["to"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
    }
    assert len(egress) == 3


def test_pdb_allows_one_pod_down(rendered: Rendered):
    pdb = rendered.one("PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    assert pdb["selector"] == rendered.one("Deployment")["spec"]["selector"]


def test_service_account_mounts_no_token(rendered: Rendered):
    assert rendered.one("ServiceAccount")["automountServiceAccountToken"] is False
    assert pod(rendered)["serviceAccountName"] == rendered.one("ServiceAccount")["metadata"]["name"]
    assert pod(rendered)["automountServiceAccountToken"] is False
