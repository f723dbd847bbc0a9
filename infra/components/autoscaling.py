"""MetricsAdapter: the per-pod request rate the API's HPA scales on, served from Prometheus.

prometheus-adapter (prometheus-community chart) serves ``custom.metrics.k8s.io`` only, with one
rule: the app's own request counter, as a per-pod rate of API requests
(``http_server_requests_per_second``). It registers no ``external.metrics.k8s.io`` (KEDA owns that
one when it comes) and no ``metrics.k8s.io`` (metrics-server serves CPU and memory): the chart
creates each APIService only when ``rules.external`` or ``rules.resource`` is set, and neither is.
infra/README.md ("Scaling behaviour") says why this and not KEDA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from dashboards import duration_seconds
from dashboards.generate.target import TARGET
from infra.components.charts import pinned_release
from infra.components.network import RELEASE_PODS, Peer, policy_spec
from infra.helm import without_nulls

ADAPTER_CHART = ("prometheus-adapter", "5.3.0", "https://prometheus-community.github.io/helm-charts")
ADAPTER = "prometheus-adapter"  # release and fullname: the Deployment, Service and APIService's target
ADAPTER_PORT = 6443  # the chart's listenPort: the API server's aggregation layer calls it
REQUESTS_COUNTER = "http_server_requests_total"  # app/telemetry/metrics.py
REQUESTS_METRIC = "http_server_requests_per_second"  # what the HPA's Pods metric names
# The API server's own address is no pod a policy can select: its Service port and the port
# kube-apiserver listens on behind it (kind, kubeadm), towards any address.
API_SERVER_PORTS = (443, 6443)
# A rate needs two samples in its window: four scrape intervals keep it from coming back empty
# after one missed scrape (kube-prometheus's rule of thumb), and no longer, or scaling lags.
WINDOW_SCRAPES = 4


def rate_window(scrape_interval: str) -> str:
    """Return the rate window for a scrape interval: ``WINDOW_SCRAPES`` intervals ("15s" -> "60s")."""
    return f"{int(duration_seconds(scrape_interval) * WINDOW_SCRAPES)}s"


def request_rate_rule(scrape_interval: str) -> dict[str, Any]:
    """The adapter rule: API requests per second of each pod, from the app's request counter.

    The ServiceMonitor gives every series the pod's ``namespace`` and ``pod``, which the adapter
    maps to those resources; ``<<.LabelMatchers>>`` selects the pods the HPA asks for and
    ``by (<<.GroupBy>>)`` returns one value each (one series per pod, or the HPA sees nothing).
    """
    return {
        "seriesQuery": f'{REQUESTS_COUNTER}{{namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{REQUESTS_COUNTER}$", "as": REQUESTS_METRIC},
        # API requests only, like the SLIs: probes come at a fixed rate whatever the load.
        "metricsQuery": (f'sum(rate(<<.Series>>{{<<.LabelMatchers>>,route=~"{TARGET.api_routes}"}}'
                         f"[{rate_window(scrape_interval)}])) by (<<.GroupBy>>)"),
    }


@dataclass(frozen=True)
class MetricsAdapterArgs:
    namespace: str  # where Prometheus runs; the adapter goes beside it
    prometheus_service: str  # Prometheus's Service in that namespace
    prometheus_pod_labels: dict[str, str]  # for the adapter's egress rule
    scrape_interval: str  # of the app's ServiceMonitor: sets the rate window and the relist interval
    replicas: int = 2  # the HPA's rate metric is unknown while no adapter answers
    prometheus_port: int = 9090


def adapter_values(args: MetricsAdapterArgs) -> dict[str, Any]:
    """Return prometheus-adapter's values: one custom rule, no default, external or resource rules."""
    return without_nulls(ADAPTER, {
        "fullnameOverride": ADAPTER,
        "replicas": args.replicas,
        "prometheus": {"url": f"http://{args.prometheus_service}.{args.namespace}.svc",
                       "port": args.prometheus_port},
        # How often the adapter lists Prometheus's series: at least the scrape interval, or a pod's
        # metric vanishes between two listings (prometheus-adapter PR #83).
        "metricsRelistInterval": f"{max(60, int(duration_seconds(args.scrape_interval)))}s",
        "logLevel": 2,  # 4 (the chart's) logs every request the API server makes
        "rules": {"default": False, "custom": [request_rate_rule(args.scrape_interval)], "external": []},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "podDisruptionBudget": {"enabled": args.replicas > 1, "maxUnavailable": 1},
    })


class MetricsAdapter(pulumi.ComponentResource):
    """prometheus-adapter (custom metrics API) and the NetworkPolicy around it."""

    metric: str  # the Pods metric it serves

    def __init__(self, name: str, args: MetricsAdapterArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:autoscaling:MetricsAdapter", name, None, opts)
        release = pinned_release(f"{name}-release", ADAPTER_CHART, release=ADAPTER, namespace=args.namespace,
                                 values=adapter_values(args), opts=pulumi.ResourceOptions(parent=self))
        # In: the API server's aggregation layer, from a node's address (it is no pod); the adapter
        # authenticates it by delegation. Out: Prometheus, and the API server (discovery, auth).
        pods = {"app.kubernetes.io/name": ADAPTER, "app.kubernetes.io/instance": ADAPTER}
        egress = [Peer(port=args.prometheus_port, namespace=args.namespace,
                       pod_labels=args.prometheus_pod_labels),
                  *(Peer(port=port, cidrs=("0.0.0.0/0",)) for port in API_SERVER_PORTS)]
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network", metadata={"name": ADAPTER, "namespace": args.namespace,
                                         "labels": {"app.kubernetes.io/part-of": "lookout"},
                                         "annotations": {RELEASE_PODS: ADAPTER}},
            spec=policy_spec(pods, ingress=[{"ports": [{"protocol": "TCP", "port": ADAPTER_PORT}]}],
                             egress=egress),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[release]))
        self.metric = REQUESTS_METRIC
        self.register_outputs({})
