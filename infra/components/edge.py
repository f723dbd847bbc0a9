"""The edge: one HTTPS entry point (Gateway API, Envoy Gateway) with a certificate cert-manager keeps.

Envoy Gateway and cert-manager come from their official charts (pinned below). The stack's one
``LoadBalancer`` is the Envoy Service, shaped by an ``EnvoyProxy`` (``externalTrafficPolicy:
Local``, so the client's address reaches Envoy). The ``Gateway`` has two listeners on the stack's
hostname: ``https`` (TLS 1.2 or newer, ends TLS with the Certificate's Secret) routed to the
app's ClusterIP Service, and ``http`` whose only route redirects to https with a 301; the ACME
HTTP-01 solver adds its challenge route there, with an exact path that wins over the redirect's
prefix. Issuers: an ACME one (HTTP-01 through the Gateway, or DNS-01) or a self-signed CA (dev,
kind). The numbers of ``EdgeTimeouts`` are explained in infra/README.md ("The edge").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.charts import pinned_release
from infra.components.network import DNS_PORTS, KUBE_DNS, namespace_selector
from infra.components.pods import Resources, app_labels, namespace_meta
from infra.helm import without_nulls

GATEWAY_CHART = ("gateway-helm", "v1.8.3", "oci://docker.io/envoyproxy")
CERT_MANAGER_CHART = ("cert-manager", "v1.21.1", "https://charts.jetstack.io")
GATEWAY_API = "gateway.networking.k8s.io/v1"
ENVOY_API = "gateway.envoyproxy.io/v1alpha1"
CERT_API = "cert-manager.io/v1"
CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
# Envoy runs unprivileged: listener port N is container port 10000 + N (Envoy Gateway's mapping).
CONTAINER_PORTS = {80: 10080, 443: 10443}
ENVOY_METRICS_PORT = 19001
XDS_PORT = 18000  # the controller's xDS server, which every Envoy pod connects to
# cert-manager's HTTP-01 solver: a pod beside the Certificate answering the challenge on this port,
# which its route on the http listener sends Envoy to.
SOLVER_LABELS = {"acme.cert-manager.io/http01-solver": "true"}
SOLVER_PORT = 8089
ENVOY_RESOURCES = Resources("100m", "1", "128Mi", "256Mi")
LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
# On objects selecting the Envoy pods of a Gateway (``namespace/name``): Envoy Gateway makes those
# pods, so no declared object shows them; infra/checks.py checks the selector is that Gateway's.
GATEWAY_PODS = "lookout.dev/pods-of-gateway"


@dataclass(frozen=True)
class EdgeTimeouts:
    """Seconds and bytes the proxy holds the app to (infra/README.md, "The edge")."""

    upstream_idle_seconds: int  # below gunicorn's keep-alive: Envoy closes an idle connection first
    request_seconds: int  # the route's whole request, above the app's slowest allowed request
    body_bytes: int  # the app's MAX_CONTENT_LENGTH: a larger body gets 413 at the edge
    client_idle_seconds: int = 300  # an idle client connection to Envoy


@dataclass(frozen=True)
class Route:
    """A further service behind the same Gateway: requests under ``path_prefix`` go to its ClusterIP
    Service, never to a load balancer of its own."""

    path_prefix: str  # e.g. /api/v1/notifications: longer than "/", so it wins for its paths
    service: str
    port: int  # the Service's port
    pod_labels: Mapping[str, str]  # the proxy's policy lets Envoy reach only these pods
    pod_port: int


@dataclass(frozen=True)
class Acme:
    email: str
    server: str = LETSENCRYPT
    solver: str = "http01"  # or dns01 (Cloudflare; the token is a secret)
    dns_api_token: pulumi.Input[str] | None = None


@dataclass(frozen=True)
class EdgeArgs:
    hostname: str
    namespace: str  # the app's: the Gateway, its routes and its certificate live beside it
    backend_service: str  # the app's ClusterIP Service
    backend_port: int
    backend_pod_labels: Mapping[str, str]  # the policy lets Envoy reach only these pods
    backend_pod_port: int
    timeouts: EdgeTimeouts
    scrape_namespace: str
    release_labels: Mapping[str, str]  # what kube-prometheus-stack selects ServiceMonitors by
    acme: Acme | None = None  # None: a self-signed CA (dev, kind)
    service_type: str = "LoadBalancer"
    external_traffic_policy: str = "Local"
    source_ranges: Sequence[str] = ()
    replicas: int = 2
    gateway_namespace: str = "envoy-gateway-system"
    cert_manager_namespace: str = "cert-manager"
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    routes: Sequence[Route] = ()  # other services under their own paths; "/" goes to backend_service


class Edge(pulumi.ComponentResource):
    """Envoy Gateway and cert-manager (Helm), the Gateway, its routes, policies and certificate."""

    url: pulumi.Output[str]
    address: pulumi.Output[str]
    proxy_labels: dict[str, str]
    cert_manager: k8s.helm.v3.Release

    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:edge:Edge", name, None, opts)
        self._name, self._args = name, args
        child = pulumi.ResourceOptions(parent=self)
        # Not labelled restricted: Envoy Gateway's shutdown-manager sidecar and its certgen Job do not
        # declare everything the restricted standard asks; the Envoy container itself does (below).
        ns = k8s.core.v1.Namespace(f"{name}-namespace", opts=child,
                                   metadata=namespace_meta(args.gateway_namespace, restricted=False))
        cm_ns = k8s.core.v1.Namespace(f"{name}-cert-manager-namespace",
                                      metadata=namespace_meta(args.cert_manager_namespace), opts=child)
        gateway_release = pinned_release(
            f"{name}-envoy-gateway", GATEWAY_CHART, release="eg", namespace=args.gateway_namespace,
            values=gateway_values(), opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
        # Gateway API's CRDs come with Envoy Gateway's chart: cert-manager starts after them, or its
        # Gateway support stays off until it restarts.
        cert_manager = pinned_release(
            f"{name}-cert-manager", CERT_MANAGER_CHART, release="cert-manager",
            namespace=args.cert_manager_namespace, values=cert_manager_values(args),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cm_ns, gateway_release]))
        after = pulumi.ResourceOptions(parent=self, depends_on=[gateway_release, cert_manager,
                                                                *args.depends_on])
        self.cert_manager = cert_manager  # what else needs cert-manager's CRDs and webhook waits on
        self.proxy_labels = proxy_labels(name, args.namespace)
        if args.acme is not None and args.acme.solver == "dns01":
            k8s.core.v1.Secret(f"{name}-dns", metadata={"namespace": args.namespace, "name": f"{name}-dns",
                                                        "labels": app_labels(name, "edge")},
                               type="Opaque", string_data={"api-token": args.acme.dns_api_token or ""},
                               opts=child)
        for kind, api, meta, spec in edge_objects(name, args):
            k8s.apiextensions.CustomResource(f"{name}-{kind.lower()}-{meta['name']}", api_version=api,
                                             kind=kind, metadata=meta, spec=spec, opts=after)
        pods_of = {GATEWAY_PODS: f"{args.namespace}/{name}"}
        k8s.networking.v1.NetworkPolicy(f"{name}-proxy-network", metadata={
            "namespace": args.gateway_namespace, "name": f"{name}-proxy", "annotations": pods_of,
            "labels": app_labels(name, "proxy")}, spec=proxy_policy(args, self.proxy_labels),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
        service = k8s.core.v1.Service(f"{name}-service", metadata={
            "namespace": args.gateway_namespace, "name": name, "annotations": pods_of,
            "labels": app_labels(name, "proxy")}, spec=entry_service(args, self.proxy_labels),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
        self.url = pulumi.Output.from_input(f"https://{args.hostname}")
        local = f"{name}.{args.gateway_namespace}.svc.cluster.local"
        self.address = (service.status.apply(lambda status: ingress_address(status) or local)
                        if args.service_type == "LoadBalancer" else pulumi.Output.from_input(local))
        self.register_outputs({"url": self.url, "address": self.address})


def proxy_labels(name: str, namespace: str) -> dict[str, str]:
    """The labels Envoy Gateway gives the Envoy pods of one Gateway."""
    return {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy",
            "app.kubernetes.io/managed-by": "envoy-gateway",
            "gateway.envoyproxy.io/owning-gateway-namespace": namespace,
            "gateway.envoyproxy.io/owning-gateway-name": name}


def gateway_values() -> dict[str, Any]:
    """Envoy Gateway's values: its CRDs (Gateway API's among them) with the release."""
    return without_nulls("gateway-helm", {"crds": {"enabled": True}})


def cert_manager_values(args: EdgeArgs) -> dict[str, Any]:
    """cert-manager's values: CRDs with the release and kept on uninstall, Gateway API support on
    (HTTP-01 through the Gateway), and its metrics scraped by the stack's Prometheus."""
    return without_nulls("cert-manager", {
        "crds": {"enabled": True, "keep": True},
        "config": {"apiVersion": "controller.config.cert-manager.io/v1alpha1",
                   "kind": "ControllerConfiguration", "enableGatewayAPI": True},
        "prometheus": {"enabled": True, "servicemonitor": {
            "enabled": True, "labels": dict(args.release_labels), "interval": "60s"}},
    })


def edge_objects(name: str, args: EdgeArgs) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(kind, apiVersion, metadata, spec) of every custom resource of the edge."""
    t = args.timeouts
    secret = f"{name}-tls"
    here = {"namespace": args.namespace, "labels": app_labels(name, "edge")}
    objects: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("EnvoyProxy", ENVOY_API, {"namespace": args.gateway_namespace, "name": name,
                                   "labels": app_labels(name, "edge")}, envoy_proxy(name, args)),
        ("GatewayClass", GATEWAY_API, {"name": name, "labels": app_labels(name, "edge")}, {
            "controllerName": CONTROLLER,
            "parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": name,
                              "namespace": args.gateway_namespace}}),
        ("Gateway", GATEWAY_API, {**here, "name": name}, {
            "gatewayClassName": name,
            "listeners": [
                {"name": "http", "protocol": "HTTP", "port": 80, "hostname": args.hostname,
                 "allowedRoutes": {"namespaces": {"from": "Same"}}},
                {"name": "https", "protocol": "HTTPS", "port": 443, "hostname": args.hostname,
                 "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]},
                 "allowedRoutes": {"namespaces": {"from": "Same"}}},
            ]}),
        # Only on the http listener: bound to both, it would redirect https to itself.
        ("HTTPRoute", GATEWAY_API, {**here, "name": f"{name}-redirect"}, {
            "parentRefs": [{"name": name, "sectionName": "http"}],
            "hostnames": [args.hostname],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                       "filters": [{"type": "RequestRedirect",
                                    "requestRedirect": {"scheme": "https", "statusCode": 301}}]}]}),
        ("HTTPRoute", GATEWAY_API, {**here, "name": name}, {
            "parentRefs": [{"name": name, "sectionName": "https"}],
            "hostnames": [args.hostname],
            # The longest matching prefix wins (Gateway API's precedence), whatever the order.
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                       "backendRefs": [{"kind": "Service", "name": service, "port": port}],
                       "timeouts": {"request": f"{t.request_seconds}s"}}
                      for path, service, port in (
                          *((r.path_prefix, r.service, r.port) for r in args.routes),
                          ("/", args.backend_service, args.backend_port))]}),
        ("ClientTrafficPolicy", ENVOY_API, {**here, "name": name}, {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}],
            "tls": {"minVersion": "1.2"},
            # Nothing in front of Envoy: the TCP peer is the client, any X-Forwarded-For it sends
            # is not believed, and Envoy appends the peer, the one entry the app trusts.
            "clientIPDetection": {"xForwardedFor": {"numTrustedHops": 0}},
            "timeout": {"http": {"idleTimeout": f"{t.client_idle_seconds}s"}}}),
        ("BackendTrafficPolicy", ENVOY_API, {**here, "name": name}, {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name}],
            "timeout": {"http": {"connectionIdleTimeout": f"{t.upstream_idle_seconds}s",
                                 "requestTimeout": f"{t.request_seconds}s"}},
            "requestBuffer": {"limit": str(t.body_bytes)}}),
        ("Certificate", CERT_API, {**here, "name": name}, {
            "secretName": secret, "dnsNames": [args.hostname],
            "issuerRef": {"kind": "Issuer", "name": issuer_name(name, args)},
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "duration": "2160h", "renewBefore": "720h"}),
    ]
    return objects + issuers(name, args, here)


def issuer_name(name: str, args: EdgeArgs) -> str:
    return f"{name}-acme" if args.acme else f"{name}-ca"


def issuers(name: str, args: EdgeArgs, here: dict[str, Any]) -> list[tuple[str, str, dict[str, Any],
                                                                           dict[str, Any]]]:
    """The ACME issuer, or a self-signed root that signs a CA whose issuer signs the edge's certificate."""
    if args.acme is None:
        return [
            ("Issuer", CERT_API, {**here, "name": f"{name}-selfsigned"}, {"selfSigned": {}}),
            ("Certificate", CERT_API, {**here, "name": f"{name}-ca"}, {
                "isCA": True, "commonName": f"{name} CA", "secretName": f"{name}-ca",
                "privateKey": {"algorithm": "ECDSA", "size": 256},
                "issuerRef": {"kind": "Issuer", "name": f"{name}-selfsigned"}}),
            ("Issuer", CERT_API, {**here, "name": f"{name}-ca"}, {"ca": {"secretName": f"{name}-ca"}}),
        ]
    acme = args.acme
    if acme.solver == "http01":
        solver: dict[str, Any] = {"http01": {"gatewayHTTPRoute": {"parentRefs": [
            {"name": name, "namespace": args.namespace, "kind": "Gateway", "sectionName": "http"}]}}}
    else:
        solver = {"dns01": {"cloudflare": {"apiTokenSecretRef": {"name": f"{name}-dns", "key": "api-token"}}}}
    return [("Issuer", CERT_API, {**here, "name": f"{name}-acme"}, {"acme": {
        "server": acme.server, "email": acme.email,
        "privateKeySecretRef": {"name": f"{name}-acme-account"}, "solvers": [solver]}})]


def entry_service(args: EdgeArgs, labels: Mapping[str, str]) -> dict[str, Any]:
    """The stack's one load balancer, in front of the Envoy pods, keeping client addresses (Local).

    Declared here rather than left to Envoy Gateway (whose own Service stays ClusterIP) so that the
    program knows its address (the stack output) and the tests see it with the listeners it serves.
    """
    spec: dict[str, Any] = {"type": args.service_type, "selector": dict(labels), "ports": [
        {"name": name, "port": port, "targetPort": CONTAINER_PORTS[port], "protocol": "TCP"}
        for name, port in (("http", 80), ("https", 443))]}
    if args.service_type == "LoadBalancer":
        spec["externalTrafficPolicy"] = args.external_traffic_policy
        if args.source_ranges:
            spec["loadBalancerSourceRanges"] = list(args.source_ranges)
    return spec


def ingress_address(status: Any) -> str:
    """The load balancer's IP or hostname (some clouds give only a name); empty until it has one."""
    ingress = (status.load_balancer.ingress or []) if status and status.load_balancer else []
    return (ingress[0].ip or ingress[0].hostname or "") if ingress else ""


def envoy_proxy(name: str, args: EdgeArgs) -> dict[str, Any]:
    """The Envoy pods; the Service Envoy Gateway makes for them stays inside the cluster."""
    return {"provider": {"type": "Kubernetes", "kubernetes": {
        "envoyService": {"name": f"{name}-internal", "type": "ClusterIP"},
        "envoyDeployment": {"replicas": args.replicas, "container": {
            "resources": ENVOY_RESOURCES.spec(),
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}},
            "pod": {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}},
        "envoyPDB": {"maxUnavailable": 1}}}}


def proxy_policy(args: EdgeArgs, labels: Mapping[str, str]) -> dict[str, Any]:
    """Envoy accepts 80 and 443 (container ports) from anywhere and its metrics from Prometheus; it
    connects to DNS, the controller's xDS and the routed services' pods only."""
    return {
        "podSelector": {"matchLabels": dict(labels)},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {"ports": [{"protocol": "TCP", "port": port} for port in CONTAINER_PORTS.values()]},
            {"from": [{"namespaceSelector": namespace_selector(args.scrape_namespace)}],
             "ports": [{"protocol": "TCP", "port": ENVOY_METRICS_PORT}]},
        ],
        "egress": [
            {"to": [KUBE_DNS], "ports": DNS_PORTS},
            {"to": [{"podSelector": {"matchLabels": {"control-plane": "envoy-gateway"}}}],
             "ports": [{"protocol": "TCP", "port": XDS_PORT}]},
            *({"to": [{"namespaceSelector": namespace_selector(args.namespace),
                       "podSelector": {"matchLabels": dict(labels)}}],
               "ports": [{"protocol": "TCP", "port": port}]}
              for labels, port in ((args.backend_pod_labels, args.backend_pod_port),
                                   *((r.pod_labels, r.pod_port) for r in args.routes))),
            *([{"to": [{"namespaceSelector": namespace_selector(args.namespace),
                        "podSelector": {"matchLabels": SOLVER_LABELS}}],
                "ports": [{"protocol": "TCP", "port": SOLVER_PORT}]}]
              if args.acme is not None and args.acme.solver == "http01" else []),
        ],
    }


