"""MailCatcher: Mailpit as the SMTP server of the stacks that must not send real mail (dev, kind).

It accepts every message on SMTP (no TLS, no authentication: the notifier's development settings
allow ``smtp+plain://``, which production refuses) and keeps it for its web UI and API on 8025
(``/api/v1/messages``, ``/api/v1/search``), which nothing outside the pod reaches but
``kubectl port-forward`` (the e2e workflow reads the welcome email through it). One replica, no
disk: the messages live in the pod's scratch dir and go with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.network import Peer, namespace_selector, policy_spec
from infra.components.pods import (
    Resources,
    WritableDir,
    app_labels,
    container_security,
    pod_security,
    selector,
    skip_annotations,
)

SMTP_PORT = 1025
HTTP_PORT = 8025
# The release's multi-arch index, by digest (as a public project pins it; check with
# `docker buildx imagetools inspect axllent/mailpit:v1.31.2` before moving it).
MAILPIT_IMAGE = ("axllent/mailpit:v1.31.2"
                 "@sha256:74d609a42ec279aa63c6b4622a6fa9b5408d1ad5b1d76a1c4be40a265ce0863d")
DATA = WritableDir("data", "/data", "256Mi")
RESOURCES = Resources("20m", "200m", "64Mi", "128Mi")


@dataclass(frozen=True)
class MailCatcherArgs:
    namespace: str  # the sender's: the catcher lives beside it
    client_labels: Mapping[str, str]  # the pods let in on SMTP (the notifier's)
    image: str = MAILPIT_IMAGE
    resources: Resources = RESOURCES
    max_messages: int = 500  # the oldest go past this


class MailCatcher(pulumi.ComponentResource):
    """Mailpit's Deployment, Service and NetworkPolicy; ``smtp_url`` for the sender, ``peer`` for
    the sender's policy."""

    smtp_url: str
    api_url: str
    peer: Peer

    def __init__(self, name: str, args: MailCatcherArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:mail:MailCatcher", name, None, opts)
        meta: dict[str, Any] = {"namespace": args.namespace, "labels": app_labels(name, "smtp")}
        labels = selector(name, "smtp")
        child = pulumi.ResourceOptions(parent=self)
        health = {"port": "http"}
        container = {
            "name": "mailpit", "image": args.image, "imagePullPolicy": "IfNotPresent",
            "env": [{"name": "MP_DATABASE", "value": f"{DATA.path}/mailpit.db"},
                    {"name": "MP_MAX_MESSAGES", "value": str(args.max_messages)},
                    {"name": "MP_SMTP_BIND_ADDR", "value": f"0.0.0.0:{SMTP_PORT}"},
                    {"name": "MP_UI_BIND_ADDR", "value": f"0.0.0.0:{HTTP_PORT}"}],
            "ports": [{"name": "smtp", "containerPort": SMTP_PORT, "protocol": "TCP"},
                      {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
            "livenessProbe": {"httpGet": {"path": "/livez", **health}, "periodSeconds": 10,
                              "timeoutSeconds": 2, "failureThreshold": 3},
            "readinessProbe": {"httpGet": {"path": "/readyz", **health}, "periodSeconds": 5,
                               "timeoutSeconds": 2},
            "resources": args.resources.spec(), "securityContext": container_security(),
            "volumeMounts": [DATA.mount()],
        }
        skips = {"CKV_K8S_15": "pinned by digest: a pull could only fetch the same image again"}
        k8s.apps.v1.Deployment(f"{name}-deployment", metadata={
            **meta, "name": name, "annotations": skip_annotations(skips)}, spec={
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # one store of messages; two pods would split them
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": app_labels(name, "smtp")}, "spec": {
                "automountServiceAccountToken": False, "enableServiceLinks": False,
                "securityContext": pod_security(), "containers": [container], "volumes": [DATA.volume()]}},
        }, opts=child)
        k8s.core.v1.Service(f"{name}-service", metadata={**meta, "name": name}, spec={
            "type": "ClusterIP", "selector": labels,
            "ports": [{"name": "smtp", "port": SMTP_PORT, "targetPort": "smtp", "protocol": "TCP"},
                      {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}]},
            opts=child)
        # SMTP from the sender's pods only; the web UI and API from nowhere (port-forward reaches the
        # pod without crossing the network); no egress but DNS: a catcher relays nothing.
        ingress = [{"from": [{"namespaceSelector": namespace_selector(args.namespace),
                              "podSelector": {"matchLabels": dict(args.client_labels)}}],
                    "ports": [{"protocol": "TCP", "port": SMTP_PORT}]}]
        k8s.networking.v1.NetworkPolicy(f"{name}-network", metadata={**meta, "name": name},
                                        spec=policy_spec(labels, ingress=ingress, egress=()), opts=child)
        host = f"{name}.{args.namespace}.svc.cluster.local"
        self.smtp_url = f"smtp+plain://{host}:{SMTP_PORT}"
        self.api_url = f"http://{host}:{HTTP_PORT}"
        self.peer = Peer(port=SMTP_PORT, namespace=args.namespace, pod_labels=labels)
        self.register_outputs({})
