"""Rewrite (or check) the CRD schemas vendored in infra/charts/crds/ for the edge's charts.

Usage:
    python -m infra.delivery.crd_refresh                  # rewrite from GitHub at each pin's tag (network)
    python -m infra.delivery.crd_refresh --check          # exit 1 when the files differ
    python -m infra.delivery.crd_refresh --git owner/name=DIR ...   # read a local clone instead

Each source names the chart and version it belongs to, the repository and tag its CRDs are read
from, the files, and the kinds the program declares objects of; ``infra.crds.crd_schemas`` derives
their schemas (descriptions dropped). Gateway API's CRDs come from Envoy Gateway's chart, which
installs them, so they are the versions that chart serves; the RabbitMQ Cluster Operator's from its
repository at the release tag (it ships a release manifest, not a chart), KEDA's from its chart.
``make crds-refresh`` / ``crds-verify``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.crds import CRDS_DIR, crd_schemas


@dataclass(frozen=True)
class CrdSource:
    chart: str
    version: str
    repository: str  # owner/name on GitHub
    tag: str
    paths: tuple[str, ...]
    kinds: tuple[str, ...]  # group/version/Kind kept


_EG = "charts/gateway-helm/charts/crds/crds/"
SOURCES = (
    CrdSource("gateway-helm", "v1.8.3", "envoyproxy/gateway", "v1.8.3", (
        _EG + "gatewayapi-crds.yaml",
        _EG + "generated/gateway.envoyproxy.io_envoyproxies.yaml",
        _EG + "generated/gateway.envoyproxy.io_clienttrafficpolicies.yaml",
        _EG + "generated/gateway.envoyproxy.io_backendtrafficpolicies.yaml",
    ), ("gateway.networking.k8s.io/v1/GatewayClass", "gateway.networking.k8s.io/v1/Gateway",
        "gateway.networking.k8s.io/v1/HTTPRoute", "gateway.envoyproxy.io/v1alpha1/EnvoyProxy",
        "gateway.envoyproxy.io/v1alpha1/ClientTrafficPolicy",
        "gateway.envoyproxy.io/v1alpha1/BackendTrafficPolicy")),
    CrdSource("cert-manager", "v1.21.1", "cert-manager/cert-manager", "v1.21.1", (
        "deploy/crds/cert-manager.io_certificates.yaml",
        "deploy/crds/cert-manager.io_issuers.yaml",
        "deploy/crds/cert-manager.io_clusterissuers.yaml",
    ), ("cert-manager.io/v1/Certificate", "cert-manager.io/v1/Issuer", "cert-manager.io/v1/ClusterIssuer")),
    # The broker's operator ships as a release manifest, not a chart: its CRD at the release's tag.
    CrdSource("cluster-operator", "v2.22.3", "rabbitmq/cluster-operator", "v2.22.3", (
        "config/crd/bases/rabbitmq.com_rabbitmqclusters.yaml",
    ), ("rabbitmq.com/v1beta1/RabbitmqCluster",)),
    CrdSource("keda", "2.20.2", "kedacore/charts", "v2.20.2", (
        "keda/templates/crds/crd-scaledobjects.yaml",
        "keda/templates/crds/crd-triggerauthentications.yaml",
    ), ("keda.sh/v1alpha1/ScaledObject", "keda.sh/v1alpha1/TriggerAuthentication")),
)
Read = Callable[[CrdSource, str], str]


def from_github(source: CrdSource, path: str) -> str:
    url = f"https://raw.githubusercontent.com/{source.repository}/{source.tag}/{path}"
    with urllib.request.urlopen(url, timeout=60) as answer:  # nosec B310 # fixed https host
        return str(answer.read().decode())


def from_clones(clones: dict[str, Path]) -> Read:
    def read(source: CrdSource, path: str) -> str:
        git = ["git", f"--git-dir={clones[source.repository]}"]
        return subprocess.run([*git, "show", f"{source.tag}:{path}"],
                              check=True, capture_output=True, text=True).stdout
    return read


def commit_of(source: CrdSource, clones: dict[str, Path]) -> str | None:
    if source.repository not in clones:
        return None
    git = ["git", f"--git-dir={clones[source.repository]}"]
    return subprocess.run([*git, "rev-parse", f"{source.tag}^{{commit}}"],
                          check=True, capture_output=True, text=True).stdout.strip()


_TEMPLATE_LINE = re.compile(r"^\s*\{\{.*\}\}\s*$")
_TEMPLATE = re.compile(r"\{\{.*?\}\}")


def untemplated(text: str) -> str:
    """A chart's CRD template as plain YAML: lines that are only template actions dropped, an action
    inside a line (a label's value) made a placeholder string. The schemas hold no template actions."""
    return "\n".join(_TEMPLATE.sub("templated", line) for line in text.splitlines()
                     if not _TEMPLATE_LINE.match(line))


def vendored(source: CrdSource, read: Read, commit: str | None) -> dict[str, Any]:
    """The file's content: the kept kinds' schemas, and where they were read."""
    schemas: dict[str, Any] = {}
    for path in source.paths:
        for doc in yaml.safe_load_all(untemplated(read(source, path))):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                schemas.update(crd_schemas(yaml.safe_dump(doc)))
    missing = set(source.kinds) - set(schemas)
    if missing:
        raise SystemExit(f"{source.chart} {source.version}: no CRD for {sorted(missing)}")
    return {"chart": source.chart, "version": source.version,
            "source": {"repository": source.repository, "tag": source.tag,
                       **({"commit": commit} if commit else {}), "paths": list(source.paths)},
            "schemas": {kind: schemas[kind] for kind in sorted(source.kinds)}}


def target(source: CrdSource) -> Path:
    return CRDS_DIR / f"{source.chart}-{source.version}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the vendored files differ")
    parser.add_argument("--git", action="append", default=[], metavar="OWNER/NAME=DIR",
                        help="read a repository from a local git directory instead of GitHub")
    args = parser.parse_args(argv)
    clones = {name: Path(path) for name, path in (item.split("=", 1) for item in args.git)}
    stale = []
    for source in SOURCES:
        read = from_clones(clones) if source.repository in clones else from_github
        data = vendored(source, read, commit_of(source, clones))
        path = target(source)
        if args.check:
            old = json.loads(path.read_text()) if path.exists() else None
            if old is None or old["schemas"] != data["schemas"]:
                stale.append(path.name)
        else:
            if path.exists():  # a pin that did not move keeps its recorded commit
                data["source"].setdefault("commit", json.loads(path.read_text())["source"].get("commit"))
            path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    for name in stale:
        print(f"{name}: differs from its source (make crds-refresh)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
