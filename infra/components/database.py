"""Database: the service's PostgreSQL, either in the cluster (CloudNativePG) or external.

In-cluster (local and dev stacks): the CloudNativePG operator from its Helm chart, and one
``Cluster`` whose owner password is generated (pulumi_random) and kept as a Pulumi secret.
External (prod): the URL comes from secret config; the network policy opens the given ranges.
Either way the component hands out ``url`` (a secret) and ``peer`` (where the app may connect).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.components.charts import pinned_release
from infra.components.exporters import POSTGRES_EXPORTER_PORT, postgres_exporter
from infra.components.network import Peer, namespace_selector, policy_spec
from infra.components.pods import (
    RELEASE_TAG_SKIPS,
    app_labels,
    namespace_meta,
    pod_security,
    selector,
    skip_annotations,
)
from infra.helm import without_nulls

CNPG_CHART = ("cloudnative-pg", "0.27.1", "https://cloudnative-pg.github.io/charts")


@dataclass(frozen=True)
class DatabaseArgs:
    mode: str  # "incluster" | "external"
    port: int = 5432
    external_url: pulumi.Input[str] | None = None
    external_cidrs: Sequence[str] = ()
    namespace: str = "lookout-db"
    operator_namespace: str = "cnpg-system"
    database: str = "lookout"
    owner: str = "lookout"
    instances: int = 1
    storage_size: str = "1Gi"
    # Where Prometheus runs: postgres_exporter beside an in-cluster database serves its statistics
    # to it (empty: none). An external database is watched by its provider's monitoring.
    scrape_namespace: str = ""
    # Further services' own databases on the same server, each owned by a role of its name:
    # in the cluster the operator makes both; external, their URLs are given.
    tenants: Sequence[str] = ()
    external_tenant_urls: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


class Database(pulumi.ComponentResource):
    """A PostgreSQL database URL and the network peer that reaches it."""

    url: pulumi.Output[str]
    peer: Peer
    tenant_urls: dict[str, pulumi.Output[str]]  # tenant -> the URL of its own database, as its role

    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:database:Database", name, None, opts)
        if args.mode == "external":
            if args.external_url is None or not args.external_cidrs:
                raise ValueError("an external database needs external_url and external_cidrs")
            self.url = pulumi.Output.secret(args.external_url)
            self.peer = Peer(port=args.port, cidrs=tuple(args.external_cidrs))
            missing = [t for t in args.tenants if t not in args.external_tenant_urls]
            if missing:
                raise ValueError(f"an external database needs the URLs of {', '.join(missing)}")
            self.tenant_urls = {t: pulumi.Output.secret(args.external_tenant_urls[t]) for t in args.tenants}
        elif args.mode == "incluster":
            self.tenant_urls = {}
            self.url = self._in_cluster(name, args)
            self.peer = Peer(port=args.port, namespace=args.namespace, pod_labels={"cnpg.io/cluster": name})
        else:
            raise ValueError(f"unknown database mode {args.mode!r}")
        self.register_outputs({"url": self.url})

    def _in_cluster(self, name: str, args: DatabaseArgs) -> pulumi.Output[str]:
        child = pulumi.ResourceOptions(parent=self)
        operator_ns = k8s.core.v1.Namespace(f"{name}-operator-namespace",
                                            metadata=namespace_meta(args.operator_namespace), opts=child)
        operator = pinned_release(
            f"{name}-operator", CNPG_CHART, release="cnpg", namespace=args.operator_namespace,
            values=_operator_values(), opts=pulumi.ResourceOptions(parent=self, depends_on=[operator_ns]))
        ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata=namespace_meta(args.namespace), opts=child)

        # Letters and digits only: the password goes into a URL unescaped.
        password = random.RandomPassword(f"{name}-password", length=32, special=False, opts=child)
        credentials = k8s.core.v1.Secret(
            f"{name}-credentials", type="kubernetes.io/basic-auth",
            metadata={"namespace": args.namespace, "name": f"{name}-credentials"},
            string_data={"username": args.owner, "password": password.result},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
        tenants = {tenant: self._tenant_role(name, args, tenant, ns) for tenant in args.tenants}
        cluster = k8s.apiextensions.CustomResource(
            f"{name}-cluster", api_version="postgresql.cnpg.io/v1", kind="Cluster",
            metadata={"namespace": args.namespace, "name": name,
                      "annotations": {"pulumi.com/waitFor": "condition=Ready",
                                      "pulumi.com/timeoutSeconds": "600"}},
            spec={
                "instances": args.instances,
                "storage": {"size": args.storage_size},
                "bootstrap": {"initdb": {"database": args.database, "owner": args.owner,
                                         "secret": {"name": credentials.metadata.name}}},
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                # The tenants' roles, kept by the operator with the passwords of their Secrets.
                **({"managed": {"roles": [
                    {"name": tenant, "ensure": "present", "login": True, "inherit": True,
                     "passwordSecret": {"name": secret.metadata.name}}
                    for tenant, (secret, _) in tenants.items()]}} if tenants else {}),
            }, opts=pulumi.ResourceOptions(parent=self, depends_on=[operator, ns, credentials,
                                                                    *(s for s, _ in tenants.values())]))

        host = f"{name}-rw.{args.namespace}.svc.cluster.local"  # the operator's read-write Service
        for tenant, (_, password_of) in tenants.items():
            # A Database object: the operator creates it owned by the tenant's role (never dropped
            # when the object goes: databaseReclaimPolicy retain, its default).
            k8s.apiextensions.CustomResource(
                f"{name}-database-{tenant}", api_version="postgresql.cnpg.io/v1", kind="Database",
                metadata={"namespace": args.namespace, "name": f"{name}-{tenant}",
                          # Pulumi waits until the operator made it: the tenant's migrations come next.
                          "annotations": {"pulumi.com/waitFor": "jsonpath={.status.applied}=true",
                                          "pulumi.com/timeoutSeconds": "300"}},
                spec={"cluster": {"name": name}, "name": tenant, "owner": tenant, "ensure": "present"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster]))
            self.tenant_urls[tenant] = pulumi.Output.secret(pulumi.Output.concat(
                "postgresql://", tenant, ":", password_of, "@", host, f":{args.port}/", tenant))
        if args.scrape_namespace:
            self._exporter(name, args, host, credentials)
        return pulumi.Output.secret(pulumi.Output.concat(
            "postgresql://", args.owner, ":", password.result, "@", host, f":{args.port}/", args.database))


    def _tenant_role(self, name: str, args: DatabaseArgs, tenant: str,
                     ns: k8s.core.v1.Namespace) -> tuple[k8s.core.v1.Secret, pulumi.Output[str]]:
        """A generated password for ``tenant``'s role, in the basic-auth Secret the operator reads."""
        password = random.RandomPassword(f"{name}-{tenant}-password", length=32, special=False,
                                         opts=pulumi.ResourceOptions(parent=self))
        secret = k8s.core.v1.Secret(
            f"{name}-{tenant}-credentials", type="kubernetes.io/basic-auth",
            metadata={"namespace": args.namespace, "name": f"{name}-{tenant}-credentials",
                      "labels": {"cnpg.io/reload": "true"}},  # a new password reaches the role
            string_data={"username": tenant, "password": password.result},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
        return secret, password.result

    def _exporter(self, name: str, args: DatabaseArgs, host: str, credentials: k8s.core.v1.Secret) -> None:
        """postgres_exporter as the owner (CloudNativePG's own exporter names its metrics cnpg_*,
        which the Debian exporter of the contract test does not write), its Service and its policy."""
        exporter = f"{name}-exporter"
        labels = selector(exporter, "metrics")
        container, volume = postgres_exporter(host, args.port, args.database, credentials.metadata.name)
        opts = pulumi.ResourceOptions(parent=self, depends_on=[credentials])
        meta = {"namespace": args.namespace, "labels": app_labels(exporter, "metrics")}
        k8s.apps.v1.Deployment(f"{exporter}-deployment", metadata={
            **meta, "name": exporter, "annotations": skip_annotations(RELEASE_TAG_SKIPS)}, spec={
                "replicas": 1, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": app_labels(exporter, "metrics")}, "spec": {
                    "automountServiceAccountToken": False, "enableServiceLinks": False,
                    "securityContext": pod_security(), "containers": [container], "volumes": [volume]}},
            }, opts=opts)
        # The ServiceMonitor names the job after this Service (dashboards/generate/dependencies.py).
        k8s.core.v1.Service(f"{exporter}-service", metadata={**meta, "name": f"{name}-metrics"}, spec={
            "type": "ClusterIP", "selector": labels,
            "ports": [{"name": "metrics", "port": POSTGRES_EXPORTER_PORT, "targetPort": "metrics",
                       "protocol": "TCP"}]}, opts=opts)
        scrapes = {"from": [{"namespaceSelector": namespace_selector(args.scrape_namespace)}],
                   "ports": [{"protocol": "TCP", "port": POSTGRES_EXPORTER_PORT}]}
        server = Peer(port=args.port, namespace=args.namespace, pod_labels={"cnpg.io/cluster": name})
        k8s.networking.v1.NetworkPolicy(f"{exporter}-network", metadata={**meta, "name": exporter},
                                        spec=policy_spec(labels, ingress=[scrapes], egress=[server]),
                                        opts=opts)


def _operator_values() -> dict[str, Any]:
    return without_nulls("cnpg", {"resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                                "limits": {"memory": "256Mi"}}})
