"""Outside-in: the blackbox exporter probes the service's public endpoint as a client would.

The exporter comes from the prometheus-community chart, in the monitoring namespace; a ``Probe``
(monitoring.coreos.com/v1) has Prometheus ask it for the probed URL every interval, under the job
the SLO dashboard's probe panels and LookoutServiceUnreachable select
(dashboards/generate/dependencies.py). ``blackbox_config()`` is the exporter's configuration:
``http_ready`` for the service's address as it is served today (plain HTTP through its Service),
``https_ready`` for the public https:// address once the edge serves TLS (the stack's
``probeUrl``), with the certificate verified. tests/test_dependencies_live.py runs Debian's
prometheus-blackbox-exporter on exactly this configuration against a real Lookout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from infra.components.charts import pinned_release
from infra.components.pods import Resources
from infra.helm import without_nulls

BLACKBOX_CHART = ("prometheus-blackbox-exporter", "11.17.2", "https://prometheus-community.github.io/helm-charts")
BLACKBOX = "blackbox-exporter"  # the release, and its Service's name (fullnameOverride)
BLACKBOX_PORT = 9115  # the chart's service.port
RESOURCES = Resources("20m", "200m", "32Mi", "64Mi")
TIMEOUT = "5s"  # below the Probe's scrape timeout (10s by default): a slow answer fails, not the scrape


def _http(tls: bool) -> dict[str, Any]:
    http: dict[str, Any] = {
        "method": "GET",
        "valid_status_codes": [200],  # /readyz answers 503 while the service cannot serve
        "preferred_ip_protocol": "ip4",
        "follow_redirects": False,  # a redirect is not the service answering
    }
    if tls:
        # The client's view of the edge: TLS is required and its certificate verified (the system
        # CAs, for the edge's name), at the minimum version clients are offered.
        http |= {"fail_if_not_ssl": True,
                 "tls_config": {"insecure_skip_verify": False, "min_version": "TLS12"}}
    else:
        http |= {"fail_if_ssl": False}
    return http


def blackbox_config() -> dict[str, Any]:
    """The exporter's module configuration (its config file), one module per scheme."""
    return {"modules": {
        "http_ready": {"prober": "http", "timeout": TIMEOUT, "http": _http(tls=False)},
        "https_ready": {"prober": "http", "timeout": TIMEOUT, "http": _http(tls=True)},
    }}


def module_for(url: str) -> str:
    """The module that probes ``url``: https_ready for https://, http_ready for http://."""
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"probeUrl {url!r} must be an http:// or https:// URL")
    return f"{scheme}_ready"


@dataclass(frozen=True)
class OutsideInArgs:
    namespace: str  # the monitoring namespace: the exporter lives beside Prometheus
    job: str  # the Probe's jobName, which the rules and dashboards select
    release_labels: Mapping[str, str]  # what kube-prometheus-stack's Prometheus selects Probes by
    interval: str = "30s"
    resources: Resources = RESOURCES


class OutsideInProbe(pulumi.ComponentResource):
    """The blackbox exporter and a Probe of one URL through it."""

    def __init__(self, name: str, args: OutsideInArgs, url: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:monitoring:OutsideInProbe", name, None, opts)
        exporter = pinned_release(
            f"{name}-exporter", BLACKBOX_CHART, release=BLACKBOX, namespace=args.namespace,
            values=blackbox_values(args), opts=pulumi.ResourceOptions(parent=self))
        target = pulumi.Output.from_input(url)
        k8s.apiextensions.CustomResource(
            f"{name}-probe", api_version="monitoring.coreos.com/v1", kind="Probe",
            metadata={"namespace": args.namespace, "name": args.job, "labels": dict(args.release_labels)},
            spec={
                "jobName": args.job,
                "interval": args.interval,
                "module": target.apply(module_for),
                "prober": {"url": f"{BLACKBOX}.{args.namespace}.svc:{BLACKBOX_PORT}", "scheme": "http",
                           "path": "/probe"},
                "targets": {"staticConfig": {"static": [target]}},
            }, opts=pulumi.ResourceOptions(parent=self, depends_on=[exporter]))
        self.register_outputs({})


def blackbox_values(args: OutsideInArgs) -> dict[str, Any]:
    """The chart's values: the program's modules, bounded resources, the RuntimeDefault seccomp
    profile (the chart's container context already drops every capability, runs as 1000 with a
    read-only root), and no ServiceMonitor of its own: the Probe is what Prometheus scrapes."""
    return without_nulls("prometheus-blackbox-exporter", {
        "fullnameOverride": BLACKBOX,
        "config": blackbox_config(),
        "resources": args.resources.spec(),
        "podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "serviceMonitor": {"enabled": False, "selfMonitor": {"enabled": False}},
        "prometheusRule": {"enabled": False},
    })
