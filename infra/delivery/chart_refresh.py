"""Rewrite (or check) infra/charts/ from the chart repositories: index entries and values data.

Usage:
    python -m infra.delivery.chart_refresh            # rewrite infra/charts/index.yaml and values/*.json
    python -m infra.delivery.chart_refresh --check    # exit 1 when they differ from what is published

Needs the network (``make charts-refresh``, ``make charts-verify``; CI's helm job runs the check).
For each chart the program pins (infra/components: ``*_CHART``) it downloads the repository's
``index.yaml``, takes the entry of the pinned version (name, version, appVersion, created, digest,
urls), downloads the chart archive from the entry's first URL, refuses it unless its SHA-256 is the
entry's digest, and derives the values data from the archive (``infra.helm.chart_data``).
A rewrite keeps the ``source`` recorded for a pin that did not move; a new pin records the archive.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from infra import helm

ENTRY_FIELDS = ("name", "version", "appVersion", "created", "digest", "urls")
INDEX_HEADER = (
    "# The index entries of the pinned charts (name, version, digest, urls), as each repository's\n"
    "# index.yaml publishes them. `make charts-refresh` rewrites this file from the live indexes;\n"
    "# `source` names where these entries were read. infra/charts/README.md says why each pin.\n")
Fetch = Callable[[str], bytes]


def pinned_charts() -> list[tuple[str, str, str]]:
    """(chart, version, repository) of every Helm release the program declares."""
    from infra.components.autoscaling import ADAPTER_CHART
    from infra.components.database import CNPG_CHART
    from infra.components.edge import CERT_MANAGER_CHART, GATEWAY_CHART
    from infra.components.monitoring import KPS_CHART, LOKI_CHART, OTEL_CHART, TEMPO_CHART
    from infra.components.probe import BLACKBOX_CHART
    from infra.components.rollouts import ROLLOUTS_CHART

    return sorted({KPS_CHART, OTEL_CHART, TEMPO_CHART, LOKI_CHART, CNPG_CHART, ROLLOUTS_CHART,
                   BLACKBOX_CHART, ADAPTER_CHART, CERT_MANAGER_CHART, GATEWAY_CHART}
                  - oci_charts())


def oci_charts() -> set[tuple[str, str, str]]:
    """Pins from OCI registries, which have no index to refresh from: their vendored entries and data
    stay as written (infra/charts/README.md says where each came from), and make helm-render checks
    the digest Helm reports when it pulls."""
    from infra.components.edge import GATEWAY_CHART

    return {GATEWAY_CHART}


def download(url: str) -> bytes:
    """GET ``url`` (https only)."""
    if not url.startswith("https://"):
        raise ValueError(f"refusing to download {url}: not https")
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - https checked above
        return bytes(response.read())


def published(pins: Iterable[tuple[str, str, str]], fetch: Fetch) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the index document and {file name: values data} for ``pins``, as published now."""
    indexes: dict[str, Any] = {}
    repositories: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for chart, version, repo in pins:
        if repo not in indexes:
            indexes[repo] = yaml.safe_load(fetch(f"{repo.rstrip('/')}/index.yaml"))
        entries = [e for e in indexes[repo].get("entries", {}).get(chart, []) if str(e["version"]) == version]
        if not entries:
            raise SystemExit(f"{chart} {version} is not in {repo}/index.yaml: pin a published version")
        entry = {k: entries[0].get(k) for k in ENTRY_FIELDS}
        entry["version"] = str(entry["version"])
        archive = fetch(entry["urls"][0])
        digest = hashlib.sha256(archive).hexdigest()
        if digest != entry["digest"]:
            raise SystemExit(f"{entry['urls'][0]}: SHA-256 {digest} is not the index's digest "
                             f"{entry['digest']}")
        index_url = f"{repo.rstrip('/')}/index.yaml"
        body = repositories.setdefault(repo, {"source": {"url": index_url}, "entries": {}})
        body["entries"].setdefault(chart, []).append(entry)
        chart_files = helm.ChartFiles.from_archive(archive)
        data[helm.values_file(chart, version).name] = helm.chart_data(chart_files, {"url": entry["urls"][0],
                                                                                     "digest": digest})
    return {"repositories": dict(sorted(repositories.items()))}, data


def _without_oci(index: dict[str, Any]) -> dict[str, Any]:
    return {**index, "repositories": {r: b for r, b in (index.get("repositories") or {}).items()
                                      if not r.startswith("oci://")}}


def _oci_files() -> set[str]:
    return {helm.values_file(chart, version).name for chart, version, _ in oci_charts()}


def _without_sources(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_sources(v) for k, v in value.items() if k != "source"}
    if isinstance(value, list):
        return [_without_sources(v) for v in value]
    return value


def differences(index: dict[str, Any], data: dict[str, Any], charts_dir: Path) -> list[str]:
    """What differs between the published ``index`` and ``data`` and the vendored files (sources aside)."""
    problems = []
    vendored_index = yaml.safe_load((charts_dir / "index.yaml").read_text()) if (
        charts_dir / "index.yaml").exists() else {}
    if _without_sources(_without_oci(vendored_index)) != _without_sources(index):
        problems.append("index.yaml: the vendored entries are not the published ones")
    values_dir = charts_dir / "values"
    vendored = {p.name for p in values_dir.glob("*.json")} if values_dir.exists() else set()
    for name in sorted(vendored - set(data) - _oci_files()):
        problems.append(f"values/{name}: vendored, but no release pins it")
    for name, published_data in sorted(data.items()):
        path = values_dir / name
        if not path.exists():
            problems.append(f"values/{name}: missing")
        elif _without_sources(json.loads(path.read_text())) != _without_sources(published_data):
            problems.append(f"values/{name}: differs from what the published archive holds")
    return problems


def write(index: dict[str, Any], data: dict[str, Any], charts_dir: Path) -> None:
    """Write the vendored files, keeping the ``source`` of a pin that did not move."""
    values_dir = charts_dir / "values"
    values_dir.mkdir(parents=True, exist_ok=True)
    old_index = yaml.safe_load((charts_dir / "index.yaml").read_text()) if (
        charts_dir / "index.yaml").exists() else {}
    for repo, body in index["repositories"].items():
        old = (old_index.get("repositories") or {}).get(repo)
        if old and _without_sources(old) == _without_sources(body):
            body["source"] = old["source"]
    kept = {r: b for r, b in (old_index.get("repositories") or {}).items() if r.startswith("oci://")}
    index = {**index, "repositories": dict(sorted({**index["repositories"], **kept}.items()))}
    (charts_dir / "index.yaml").write_text(INDEX_HEADER + yaml.safe_dump(index, sort_keys=False, width=200))
    for path in values_dir.glob("*.json"):
        if path.name not in data and path.name not in _oci_files():
            path.unlink()
    for name, new in data.items():
        path = values_dir / name
        if path.exists():
            old = json.loads(path.read_text())
            if _without_sources(old) == _without_sources(new):
                continue  # the same chart: keep the file and the source it names
        path.write_text(json.dumps(new, indent=1) + "\n")


def main(argv: list[str] | None = None, fetch: Fetch = download) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    parser.add_argument("--charts-dir", type=Path, default=helm.CHARTS_DIR)
    args = parser.parse_args(argv)
    index, data = published(pinned_charts(), fetch)
    if args.check:
        problems = differences(index, data, args.charts_dir)
        for problem in problems:
            print(f"charts: {problem}")
        print(f"charts: {len(data)} charts checked against their repositories, {len(problems)} differences")
        return 1 if problems else 0
    write(index, data, args.charts_dir)
    print(f"charts: {len(data)} charts written to {args.charts_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
