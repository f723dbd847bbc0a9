"""NetworkPolicy building blocks: a default-deny policy per workload with named holes in it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# On a policy for pods a Helm release creates (no declared object shows them): the release's name,
# which the policy's app.kubernetes.io/instance selector must equal (infra/checks.py).
RELEASE_PODS = "lookout.dev/pods-of-helm-release"
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
KUBE_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},  # CoreDNS keeps kube-dns's label
}


def namespace_selector(namespace: str) -> dict[str, Any]:
    # kubernetes.io/metadata.name is set by the API server on every namespace (1.22+).
    return {"matchLabels": {"kubernetes.io/metadata.name": namespace}}


@dataclass(frozen=True)
class Peer:
    """Where a workload may connect to: pods (by namespace and labels) or CIDR ranges, on one port."""

    port: int
    namespace: str | None = None
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    cidrs: Sequence[str] = ()
    protocol: str = "TCP"

    def rule(self) -> dict[str, Any]:
        """Return the NetworkPolicy egress rule for this peer (ports are the pods' own ports)."""
        if self.cidrs:
            to = [{"ipBlock": {"cidr": cidr}} for cidr in self.cidrs]
        else:
            peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(self.pod_labels)}}
            if self.namespace:
                peer["namespaceSelector"] = namespace_selector(self.namespace)
            to = [peer]
        return {"to": to, "ports": [{"protocol": self.protocol, "port": self.port}]}


def policy_spec(pod_labels: Mapping[str, str], ingress: list[dict[str, Any]],
                egress: Sequence[Peer]) -> dict[str, Any]:
    """Deny everything for the selected pods except ``ingress``, DNS and the ``egress`` peers."""
    return {
        "podSelector": {"matchLabels": dict(pod_labels)},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": ingress,
        "egress": [{"to": [KUBE_DNS], "ports": DNS_PORTS}, *(peer.rule() for peer in egress)],
    }
