"""Render every Helm release of a stack with exactly the values the program passes, and validate it.

Usage:
    python -m infra.delivery.helm_render --stack dev [--kubeconform PATH] [--out build/helm/dev]

Reads ``build/manifests/<stack>/helm-releases.yaml`` (``make manifests``) and, for each release:
checks it as ``make test`` does (infra.helm: pinned version in the vendored index, known keys, no
null, the chart's schema); ``helm pull``s the archive and refuses it unless its SHA-256 is the
vendored index's digest (Pulumi's Release has no digest option, so this is where the pin is held);
writes ``<release>.values.yaml`` and runs ``helm template`` on the verified archive with it
(CRDs included, for the Kubernetes version below). Then kubeconform validates every rendered object,
strictly, against Kubernetes' schemas and against schemas made from the CRDs the charts render, and
every aggregated API is registered by one release, its owner (``APISERVICE_OWNERS``).

Environment variables read: HELM (default ``helm``), KUBECONFORM (default ``kubeconform``; the
``--kubeconform`` option wins). Needs the network: GitHub Actions' helm job runs it
(``make helm-render``); tests run it with stand-ins for both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from infra import helm
from infra.checks import K8S_VERSIONS

KUBERNETES_VERSION = K8S_VERSIONS[-1]  # the newest the manifests are validated for
SCHEMA_NAME = "{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"  # kubeconform's template words


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    print("+ " + " ".join(command), flush=True)
    return subprocess.run(command, text=True, check=False, **kwargs)


def index_entry(index: dict[str, Any], release: dict[str, Any]) -> dict[str, Any]:
    for entry in index["repositories"][release["repository"]]["entries"][release["chart"]]:
        if str(entry["version"]) == str(release["version"]):
            return dict(entry)
    raise KeyError(f"{release['chart']} {release['version']}")


def verified_archive(release: dict[str, Any], entry: dict[str, Any], helm_bin: str, into: Path) -> Path:
    """``helm pull`` the release's chart into ``into`` and return it, once its digest is the index's."""
    chart, version = release["chart"], str(release["version"])
    if release["repository"].startswith("oci://"):
        # A registry's digest is its manifest's, which Helm prints as it pulls ("Digest: sha256:...").
        pulled = run([helm_bin, "pull", f"{release['repository']}/{chart}", "--version", version,
                      "--destination", str(into)], capture_output=True)
        print(pulled.stdout + pulled.stderr, flush=True)
        archive = into / f"{chart}-{version}.tgz"
        found = re.search(r"Digest: sha256:([0-9a-f]{64})", pulled.stdout + pulled.stderr)
        if pulled.returncode != 0 or not archive.exists() or not found:
            raise SystemExit(f"helm pull {chart} {version} failed")
        if found.group(1) != entry["digest"]:
            raise SystemExit(f"{chart} {version}: manifest digest {found.group(1)} is not the vendored "
                             f"digest {entry['digest']}")
        return archive
    pulled = run([helm_bin, "pull", chart, "--repo", release["repository"], "--version", version,
                  "--destination", str(into)])
    archive = into / f"{chart}-{version}.tgz"
    if pulled.returncode != 0 or not archive.exists():
        raise SystemExit(f"helm pull {chart} {version} failed")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != entry["digest"]:
        raise SystemExit(f"{archive.name}: SHA-256 {digest} is not the vendored digest {entry['digest']}")
    return archive


def crd_schemas(rendered: list[Path], into: Path) -> list[Path]:
    """Write a JSON schema for each version of each CRD in ``rendered``, named as kubeconform asks."""
    into.mkdir(parents=True, exist_ok=True)
    written = []
    for path in rendered:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            kind = doc["spec"]["names"]["kind"].lower()
            for version in doc["spec"].get("versions") or []:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema:
                    target = into / f"{kind}_{version['name']}.json"
                    target.write_text(json.dumps(schema))
                    written.append(target)
    return written


# The metrics APIs a release registers, and which release that must be: KEDA serves external
# metrics, prometheus-adapter custom metrics (the users API's request rate). metrics.k8s.io stays
# metrics-server's, which no release here installs. A second owner would take the API over.
APISERVICE_OWNERS = {"v1beta1.external.metrics.k8s.io": "keda",
                     "v1beta1.custom.metrics.k8s.io": "prometheus-adapter",
                     "v1beta1.metrics.k8s.io": None}


def apiservice_problems(rendered: dict[str, Path]) -> list[str]:
    """Each APIService in the releases' renderings (``{release: file}``) comes from one release, the
    one ``APISERVICE_OWNERS`` names for it."""
    registered: dict[str, list[str]] = {}
    for release, path in rendered.items():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "APIService":
                registered.setdefault(doc["metadata"]["name"], []).append(release)
    problems = []
    for service, releases in sorted(registered.items()):
        if len(releases) > 1:
            problems.append(f"APIService {service}: registered by {len(releases)} releases "
                            f"({', '.join(releases)})")
        owner = APISERVICE_OWNERS.get(service, releases[0])
        if any(release != owner for release in releases):
            problems.append(f"APIService {service}: registered by {', '.join(releases)}, "
                            f"but {owner or 'metrics-server (no release here)'} serves it")
    return problems


def render_stack(releases_file: Path, out: Path, helm_bin: str, kubeconform: str,
                 index_file: Path = helm.INDEX) -> int:
    releases = (yaml.safe_load(releases_file.read_text()) or {}).get("releases") or []
    if not releases:
        print(f"{releases_file}: no releases")
        return 1
    problems = helm.releases_problems(releases)
    for problem in problems:
        print(f"helm-render: {problem}")
    if problems:
        return 1
    index = yaml.safe_load(index_file.read_text())
    out.mkdir(parents=True, exist_ok=True)
    rendered: list[Path] = []
    with tempfile.TemporaryDirectory() as downloads:
        for release in releases:
            archive = verified_archive(release, index_entry(index, release), helm_bin, Path(downloads))
            values = out / f"{release['name']}.values.yaml"
            values.write_text(yaml.safe_dump(release.get("values") or {}, sort_keys=False))
            target = out / f"{release['name']}.yaml"
            with target.open("w") as stdout:
                result = run([helm_bin, "template", release["name"], str(archive),
                              "--namespace", release["namespace"], "--values", str(values),
                              "--include-crds", "--kube-version", KUBERNETES_VERSION,
                              # Served by every API server since 1.10, but no cluster answers here:
                              # without it prometheus-adapter's APIService falls back to v1beta1.
                              "--api-versions", "apiregistration.k8s.io/v1"], stdout=stdout)
            if result.returncode != 0:
                print(f"helm-render: helm template {release['name']} failed")
                return 1
            rendered.append(target)
    owners = apiservice_problems({path.stem: path for path in rendered})
    for problem in owners:
        print(f"helm-render: {problem}")
    if owners:
        return 1
    schemas = out / "schemas"
    crd_schemas(rendered, schemas)
    checked = run([kubeconform, "-strict", "-summary", "-kubernetes-version", KUBERNETES_VERSION,
                   "-schema-location", "default", "-schema-location", str(schemas / SCHEMA_NAME),
                   *[str(p) for p in rendered]])
    return checked.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--releases", type=Path, help="default build/manifests/<stack>/helm-releases.yaml")
    parser.add_argument("--out", type=Path, help="default build/helm/<stack>")
    parser.add_argument("--index", type=Path, default=helm.INDEX, help="vendored index entries")
    parser.add_argument("--kubeconform", default=os.environ.get("KUBECONFORM", "kubeconform"))
    args = parser.parse_args(argv)
    releases = args.releases or Path("build/manifests") / args.stack / "helm-releases.yaml"
    out = args.out or Path("build/helm") / args.stack
    return render_stack(releases, out, os.environ.get("HELM", "helm"), args.kubeconform, args.index)


if __name__ == "__main__":
    sys.exit(main())
