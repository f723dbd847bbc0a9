"""The edge's settings: the public hostname, who signs its certificate, how ACME proves the name."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

import pulumi

from infra.components.edge import Acme, EdgeArgs, EdgeTimeouts, Route
from infra.config.fields import Group, Key, email, url_or_empty
from infra.stack_config import ConfigError


def hostname(name: str, value: str) -> None:
    """A DNS name the certificate can carry (no wildcard, no port, no scheme)."""
    label = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
    if not re.fullmatch(rf"{label}(\.{label})+", value):
        raise ConfigError(f"{name}: {value!r} is not a DNS name such as api.example.com")


@dataclass(frozen=True)
class EdgeSettings(Group):
    """Where clients reach the service over HTTPS, and its certificate."""

    hostname: Annotated[str, Key("edgeHostname", check=hostname)]
    replicas: Annotated[int, Key("edgeReplicas", at_least=1)]
    issuer: Annotated[str, Key("certificateIssuer", one_of=("acme", "selfsigned"))]
    acme_email: Annotated[str, Key("acmeEmail")]
    acme_server: Annotated[str, Key("acmeServer", check=url_or_empty)]
    acme_solver: Annotated[str, Key("acmeSolver", one_of=("http01", "dns01"))]
    acme_dns_api_token: Annotated[pulumi.Output[str] | None, Key("acmeDnsApiToken")]

    def check(self) -> None:
        if self.issuer == "acme":
            email("acmeEmail", self.acme_email)  # the ACME account's contact: expiry notices go there
            if not self.acme_server.startswith("https://"):
                raise ConfigError(f"acmeServer must be an https:// ACME directory, got {self.acme_server!r}")
            if self.acme_solver == "dns01" and self.acme_dns_api_token is None:
                raise ConfigError("acmeSolver dns01 needs acmeDnsApiToken (set it with --secret)")

    @property
    def public_url(self) -> str:
        return f"https://{self.hostname}"

    def args(self, *, namespace: str, backend_service: str, backend_port: int,
             backend_pod_labels: Mapping[str, str], backend_pod_port: int, timeouts: EdgeTimeouts,
             scrape_namespace: str, release_labels: Mapping[str, str], service_type: str,
             external_traffic_policy: str, source_ranges: Sequence[str],
             depends_on: Sequence[pulumi.Resource] = (), routes: Sequence[Route] = ()) -> EdgeArgs:
        """Return the component's Args: these settings plus the service it fronts."""
        acme = (Acme(self.acme_email, self.acme_server, self.acme_solver, self.acme_dns_api_token)
                if self.issuer == "acme" else None)
        return EdgeArgs(hostname=self.hostname, namespace=namespace, backend_service=backend_service,
                        backend_port=backend_port, backend_pod_labels=backend_pod_labels,
                        backend_pod_port=backend_pod_port, timeouts=timeouts,
                        scrape_namespace=scrape_namespace,
                        release_labels=release_labels, acme=acme, service_type=service_type,
                        external_traffic_policy=external_traffic_policy, source_ranges=tuple(source_ranges),
                        replicas=self.replicas, depends_on=tuple(depends_on), routes=tuple(routes))
