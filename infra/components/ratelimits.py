"""RateLimitStore: one Redis-protocol server that every pod of the service counts its rate limits in.

Without it each process counts alone (``memory://``): the HPA adding pods multiplies every
limit, and refused logins per account, the guard against password guessing, are counted per pod.
The counters are worth nothing after a restart, and while Redis is away the service limits per
process and keeps answering (app/ratelimit.py), so this is one replica with no disk: nothing is
saved, no volume is claimed. Its password is generated (pulumi_random) and kept as a Pulumi
secret; it reaches the server in the config file, mounted from a Secret, never on a command line.

The server is Valkey, the Linux Foundation's BSD-licensed continuation of Redis 7.2: the same
protocol and configuration (the service connects with ``redis://``; a test runs Debian's
redis-server on the configuration rendered here), without Redis 7.4's source-available licence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.components.exporters import REDIS_EXPORTER_PORT, redis_exporter, redis_password_file
from infra.components.network import Peer, namespace_selector, policy_spec
from infra.components.pods import (
    RELEASE_TAG_SKIPS,
    Resources,
    WritableDir,
    app_labels,
    container_security,
    namespace_meta,
    pod_security,
    selector,
    skip_annotations,
)
from infra.stack_config import parse_quantity

PORT = 6379
CONFIG_DIR = "/etc/valkey"
DATA = WritableDir("data", "/data", "16Mi")  # the image's working dir; nothing is written there
RESOURCES = Resources("50m", "250m", "96Mi", "128Mi")


@dataclass(frozen=True)
class RateLimitStoreArgs:
    client_namespace: str  # the service's pods, the only ones let in
    client_labels: Mapping[str, str]
    namespace: str = "lookout-ratelimit"
    image: str = "valkey/valkey:9.0.0-alpine"
    max_memory_mib: int = 64  # counters past this are evicted, least recently used first
    resources: Resources = RESOURCES
    # Where Prometheus runs: a redis_exporter sidecar serves the store's metrics to it (empty: none).
    scrape_namespace: str = ""


def server_conf(password: str, max_memory_mib: int, port: int = PORT, data_dir: str = DATA.path,
               bind: str = "* -::*") -> str:
    """Return the server's configuration (a test runs a real redis-server on exactly this)."""
    return "\n".join([
        f"port {port}",
        f"bind {bind}",
        f"requirepass {password}",
        # Counters only: nothing to keep, so nothing written (no snapshots, no append-only file).
        'save ""',
        "appendonly no",
        f"dir {data_dir}",
        # Bounded: past the limit the least recently used counters go rather than writes failing.
        f"maxmemory {max_memory_mib}mb",
        "maxmemory-policy allkeys-lru",
        "",
    ])


class RateLimitStore(pulumi.ComponentResource):
    """A server for the service's rate-limit counters: its URL (a secret) and the peer that reaches it."""

    url: pulumi.Output[str]
    peer: Peer

    def __init__(self, name: str, args: RateLimitStoreArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:ratelimit:RateLimitStore", name, None, opts)
        if not 0 < args.max_memory_mib * 2**20 < parse_quantity("memory limit", args.resources.memory_limit):
            raise ValueError(f"max_memory_mib {args.max_memory_mib} must be above 0 and below the "
                             f"memory limit {args.resources.memory_limit}")
        self._name, self._args = name, args
        child = pulumi.ResourceOptions(parent=self)
        ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata=namespace_meta(args.namespace), opts=child)
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])

        # Letters and digits only: the password goes into a URL unescaped.
        password = random.RandomPassword(f"{name}-password", length=32, special=False, opts=child)
        config = k8s.core.v1.Secret(  # auto-named: a new password rolls the pod
            f"{name}-config", metadata=self._meta(), type="Opaque",
            string_data={"valkey.conf": password.result.apply(lambda p: server_conf(p, args.max_memory_mib)),
                         "password": password.result,
                         "exporter-passwords.json": password.result.apply(
                             lambda p: redis_password_file(p, PORT))},
            opts=in_ns)
        labels = selector(name, "server")
        # The probe reads the password from the mounted file, so it is never on a command line.
        ping = ["sh", "-c",
                f'VALKEYCLI_AUTH="$(cat {CONFIG_DIR}/password)" valkey-cli -p {PORT} ping | grep -qx PONG']
        container = {
            "name": "valkey", "image": args.image, "imagePullPolicy": "IfNotPresent",
            "args": ["valkey-server", f"{CONFIG_DIR}/valkey.conf"],
            "ports": [{"name": "redis", "containerPort": PORT, "protocol": "TCP"}],
            "readinessProbe": {"exec": {"command": ping}, "periodSeconds": 5, "timeoutSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10, "timeoutSeconds": 2,
                              "failureThreshold": 3},
            "resources": args.resources.spec(), "securityContext": container_security(),
            "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, DATA.mount()],
        }
        k8s.apps.v1.Deployment(f"{name}-deployment", metadata=self._meta(
            name=name, annotations=skip_annotations(RELEASE_TAG_SKIPS)), spec={
                "replicas": 1,
                "strategy": {"type": "Recreate"},  # two at once would split the counts between them
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": app_labels(name, "server")}, "spec": {
                    "automountServiceAccountToken": False, "enableServiceLinks": False,
                    "securityContext": pod_security(),
                    "containers": [container,
                                   *([redis_exporter(PORT, CONFIG_DIR)] if args.scrape_namespace else [])],
                    "volumes": [{"name": "config", "secret": {"secretName": config.metadata.name,
                                                              "defaultMode": 0o440}}, DATA.volume()]}},
            }, opts=in_ns)
        service = k8s.core.v1.Service(f"{name}-service", metadata=self._meta(name=name), spec={
            "type": "ClusterIP", "selector": labels,
            "ports": [{"name": "redis", "port": PORT, "targetPort": "redis", "protocol": "TCP"}]}, opts=in_ns)
        ingress = [{"from": [{"namespaceSelector": namespace_selector(args.client_namespace),
                              "podSelector": {"matchLabels": dict(args.client_labels)}}],
                    "ports": [{"protocol": "TCP", "port": PORT}]}]
        if args.scrape_namespace:
            # The sidecar's metrics, on a Service of their own (the job is named after it).
            k8s.core.v1.Service(f"{name}-metrics", metadata={
                "namespace": args.namespace, "labels": app_labels(name, "metrics"),
                "name": f"{name}-metrics"},
                spec={"type": "ClusterIP", "selector": labels,
                      "ports": [{"name": "metrics", "port": REDIS_EXPORTER_PORT, "targetPort": "metrics",
                                 "protocol": "TCP"}]}, opts=in_ns)
            ingress.append({"from": [{"namespaceSelector": namespace_selector(args.scrape_namespace)}],
                            "ports": [{"protocol": "TCP", "port": REDIS_EXPORTER_PORT}]})
        k8s.networking.v1.NetworkPolicy(f"{name}-network", metadata=self._meta(name=name), spec=policy_spec(
            labels, ingress=ingress, egress=()), opts=in_ns)

        host = pulumi.Output.concat(service.metadata.name, ".", args.namespace, ".svc.cluster.local")
        self.url = pulumi.Output.secret(pulumi.Output.concat("redis://:", password.result, "@", host,
                                                             f":{PORT}/0"))
        self.peer = Peer(port=PORT, namespace=args.namespace, pod_labels=labels)
        self.register_outputs({"url": self.url})

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return {"namespace": self._args.namespace, "labels": app_labels(self._name, "server"), **extra}

