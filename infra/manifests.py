"""Write every Kubernetes object a stack declares as YAML, with its Helm releases and outputs.

Usage:
    python -m infra.manifests --stack dev [--out build/manifests/dev] [--set loadtestEnabled=true]

Writes ``objects/<kind>-<namespace>-<name>.yaml`` (one object per file, Secret values
redacted), ``policy/`` (each Rollout's pods as a Deployment, which checkov can scan: it reads pod
specs of built-in kinds only), ``helm-releases.yaml`` (chart, version, repository and values of each
release),
``manifest-files.yaml`` (the release manifests installed as they are: an operator's) and
``outputs.yaml`` (the stack outputs). The folder is emptied first, so it shows one run exactly.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import yaml

from infra.checks import pods_as_deployment
from infra.mockrun import Rendered, render
from infra.stack_config import schema

TOP_LEVEL = ("apiVersion", "kind", "metadata", "type", "spec", "data", "stringData")
REDACTED = "<redacted>"


def ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """Put apiVersion, kind and metadata first, as people write manifests."""
    first = {k: obj[k] for k in TOP_LEVEL if k in obj}
    return {**first, **{k: v for k, v in obj.items() if k not in TOP_LEVEL}}


def redacted(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] != "Secret":
        return obj
    return {**obj, **{key: dict.fromkeys(obj[key], REDACTED) for key in ("data", "stringData") if key in obj}}


def file_name(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return "-".join(p for p in (obj["kind"].lower(), meta.get("namespace"), meta["name"]) if p) + ".yaml"


def chart_of(release: dict[str, Any]) -> dict[str, Any]:
    """The chart and its repository: from ``repositoryOpts``, or split from an OCI reference
    (``oci://registry/path/chart``: the registry path is the repository)."""
    chart = str(release.get("chart") or "")
    if chart.startswith("oci://"):
        repository, _, name = chart.rpartition("/")
        return {"chart": name, "repository": repository}
    return {"chart": chart, "repository": (release.get("repositoryOpts") or {}).get("repo")}


def write(rendered: Rendered, out: Path) -> list[Path]:
    """Write the rendered stack under ``out`` and return the object files."""
    if out.exists():
        shutil.rmtree(out)
    (out / "objects").mkdir(parents=True)
    written = []
    for obj in rendered.objects:
        path = out / "objects" / file_name(obj)
        if path.exists():
            raise ValueError(f"two objects would be written to {path.name}")
        path.write_text(yaml.safe_dump(ordered(redacted(obj)), sort_keys=False))
        written.append(path)
        if obj["kind"] == "Rollout":
            (out / "policy").mkdir(exist_ok=True)
            (out / "policy" / file_name(obj)).write_text(
                yaml.safe_dump(ordered(pods_as_deployment(obj)), sort_keys=False))
    releases = [{"name": r.get("name"), "namespace": r.get("namespace"), **chart_of(r),
                 "version": r.get("version"), "values": r.get("values") or {}} for r in rendered.releases]
    (out / "helm-releases.yaml").write_text(yaml.safe_dump({"releases": releases}, sort_keys=False))
    files = {"files": rendered.manifest_files}
    (out / "manifest-files.yaml").write_text(yaml.safe_dump(files, sort_keys=False))
    (out / "outputs.yaml").write_text(yaml.safe_dump(rendered.outputs, sort_keys=False))
    return written


def parse_set(pairs: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` pairs into config overrides typed as Pulumi.yaml declares them."""
    keys, overrides = schema(), {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        if name not in keys:
            raise SystemExit(f"--set {name}: not a config key of Pulumi.yaml")
        overrides[name] = yaml.safe_load(raw) if keys[name].type != "string" else raw
        keys[name].check(overrides[name], "--set")
    return overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True, help="stack name: Pulumi.<stack>.yaml is read")
    parser.add_argument("--out", type=Path, help="folder to write (default build/manifests/<stack>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key")
    args = parser.parse_args(argv)
    out = args.out or Path("build/manifests") / args.stack
    rendered = render(args.stack, parse_set(args.set))
    written = write(rendered, out)
    print(f"{args.stack}: {len(written)} objects and {len(rendered.releases)} Helm releases written to {out}")


if __name__ == "__main__":
    main()

