"""The Helm charts the program installs: what their repositories publish and what values they know.

Usage:
    python -m infra.helm build/manifests/dev/helm-releases.yaml [...]   # exit 1, one line a problem

Every release in a ``helm-releases.yaml`` (``make manifests`` writes one per stack) is checked:

  - its chart and version are an entry of the repository's index, as vendored in
    ``infra/charts/index.yaml`` (``make charts-refresh`` rewrites it where the network is);
  - no value anywhere is null: Helm reads a null as "delete this default", but whether a null
    reaches Helm depends on the Pulumi SDK and provider (the Python SDK drops it), so defaults are
    removed the way each chart documents instead;
  - every key path is one the chart knows (``infra/charts/values/``): one its defaults have, one
    below a free-form default (an empty map, a list, a scalar), one its templates read
    (``.Values.a.b``) or one below what they pass through whole (``toYaml .Values.a``); keys of a
    subchart (``grafana.*`` of kube-prometheus-stack) are checked against the subchart's own data;
  - the values match the chart's ``values.schema.json`` where it has one (``required`` left out:
    the chart's defaults fill those, as Helm validates the merged values).

``chart_data(chart_dir)`` derives that data from an unpacked chart; ``make charts-refresh`` runs it
on each pinned chart's published archive.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CHARTS_DIR = Path(__file__).resolve().parent / "charts"
INDEX = CHARTS_DIR / "index.yaml"
VALUES_DIR = CHARTS_DIR / "values"
# Words a schema keeps for people, not for validation, and `required` (see the module docstring).
SCHEMA_PROSE = {"description", "title", "examples", "default", "$comment", "markdownDescription", "required"}
VALUES_REF = re.compile(r"\$?\.Values((?:\.[A-Za-z_][\w-]*)+)")
INDEX_REF = re.compile(r"index\s+\$?\.Values((?:\s+\"[^\"]+\")+)")
PASSED_THROUGH = (
    re.compile(r"toYaml\s+\(?\s*\$?\.Values((?:\.[A-Za-z_][\w-]*)+)\s*\)?"),
    re.compile(r"\$?\.Values((?:\.[A-Za-z_][\w-]*)+)\s*\|\s*toYaml"),
)
WITH_BLOCK = re.compile(r"\{\{-?\s*with\s+\$?\.Values((?:\.[A-Za-z_][\w-]*)+)\s*-?\}\}(.*?)\{\{-?\s*end",
                        re.DOTALL)


def release_key(name: str, version: str) -> str:
    return f"{name}-{version}"


# --- what a chart knows, derived from the chart itself ---------------------------------------------

def skeleton(value: Any) -> Any:
    """The shape of a defaults tree: non-empty maps keep their keys, every leaf becomes its type."""
    if isinstance(value, dict) and value:
        return {str(k): skeleton(v) for k, v in value.items()}
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    return type(value).__name__.replace("NoneType", "null")


def schema_rules(schema: Any) -> Any:
    """A values schema without its prose (and without ``required``, which the defaults fill)."""
    if isinstance(schema, list):
        return [schema_rules(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    rules = {}
    for key, value in schema.items():
        if key in SCHEMA_PROSE:
            continue
        if key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(value, dict):
            rules[key] = {name: schema_rules(sub) for name, sub in value.items()}  # names, not keywords
        else:
            rules[key] = schema_rules(value)
    return rules


def template_paths(texts: list[str]) -> tuple[list[str], list[str]]:
    """Return the ``.Values`` paths the templates read, and those they pass through whole."""
    read: set[str] = set()
    whole: set[str] = set()
    for text in texts:
        read.update(m.group(1)[1:] for m in VALUES_REF.finditer(text))
        read.update(".".join(re.findall(r"\"([^\"]+)\"", m.group(1))) for m in INDEX_REF.finditer(text))
        for pattern in PASSED_THROUGH:
            whole.update(m.group(1)[1:] for m in pattern.finditer(text))
        for match in WITH_BLOCK.finditer(text):
            block = match.group(2)
            if re.search(r"toYaml\s+\.\s", block) or re.search(r"\{\{-?\s*\.\s*\|\s*toYaml", block):
                whole.add(match.group(1)[1:])
    return sorted(read), sorted(whole)


@dataclass(frozen=True)
class ChartFiles:
    """An unpacked chart: a directory, or the members of a packaged archive under one prefix."""

    files: Mapping[str, bytes]  # path inside the chart -> content

    @classmethod
    def from_dir(cls, root: Path) -> ChartFiles:
        return cls({str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()})

    @classmethod
    def from_archive(cls, data: bytes) -> ChartFiles:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = [m for m in archive.getmembers() if m.isfile()]
            files = {m.name.split("/", 1)[1]: archive.extractfile(m).read()  # type: ignore[union-attr]
                     for m in members if "/" in m.name}
        return cls(files)

    def text(self, path: str) -> str | None:
        return self.files[path].decode() if path in self.files else None

    def subcharts(self) -> dict[str, ChartFiles]:
        """The charts under ``charts/``: directories, or the archives ``helm dependency update`` leaves."""
        found: dict[str, ChartFiles] = {}
        for path, data in self.files.items():
            parts = path.split("/")
            if len(parts) == 2 and parts[0] == "charts" and parts[1].endswith(".tgz"):
                sub = ChartFiles.from_archive(data)
                found[yaml.safe_load(sub.text("Chart.yaml") or "{}")["name"]] = sub
            elif len(parts) == 3 and parts[0] == "charts" and parts[2] == "Chart.yaml":
                prefix = f"charts/{parts[1]}/"
                found[parts[1]] = ChartFiles({p[len(prefix):]: d for p, d in self.files.items()
                                              if p.startswith(prefix)})
        return found


def chart_data(chart: ChartFiles, source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Derive what ``chart`` knows: its defaults' shape, the paths its templates read, its schema,
    and the same for each subchart (under the name or alias its Chart.yaml gives it)."""
    meta = yaml.safe_load(chart.text("Chart.yaml") or "{}")
    defaults = yaml.safe_load(chart.text("values.yaml") or "{}") or {}
    texts = [data.decode(errors="replace") for path, data in chart.files.items()
             if path.startswith("templates/") or path == "values.yaml"]
    read, whole = template_paths(texts)
    schema_text = chart.text("values.schema.json")
    aliases = {d["name"]: d.get("alias") or d["name"] for d in meta.get("dependencies") or []}
    subcharts = {aliases.get(name, name): chart_data(sub) for name, sub in sorted(chart.subcharts().items())}
    return {
        "chart": meta["name"], "version": str(meta["version"]), "appVersion": meta.get("appVersion"),
        **({"source": dict(source)} if source else {}),
        "defaults": skeleton(defaults) if defaults else {},
        "templateReads": read, "templatePassesThrough": whole,
        "schema": schema_rules(json.loads(schema_text)) if schema_text else None,
        "subcharts": subcharts,
    }


# --- the checks ------------------------------------------------------------------------------------

@cache
def index_entries() -> dict[str, dict[str, dict[str, Any]]]:
    """Vendored index entries: repository URL -> chart name -> version -> entry."""
    doc = yaml.safe_load(INDEX.read_text())
    return {repo: {name: {str(e["version"]): e for e in entries}
                   for name, entries in (body.get("entries") or {}).items()}
            for repo, body in (doc.get("repositories") or {}).items()}


def values_file(chart: str, version: str) -> Path:
    return VALUES_DIR / f"{release_key(chart, version)}.json"


def load_chart_data(chart: str, version: str) -> dict[str, Any] | None:
    path = values_file(chart, version)
    return json.loads(path.read_text()) if path.exists() else None


def null_paths(value: Any, prefix: str = "") -> Iterator[str]:
    """Yield the path of every null in ``value`` (a values tree)."""
    if value is None:
        yield prefix or "(the values themselves)"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from null_paths(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from null_paths(item, f"{prefix}[{number}]")


def without_nulls(chart: str, values: dict[str, Any]) -> dict[str, Any]:
    """Return ``values``, or fail naming each null: the program never hands Helm a null."""
    nulls = list(null_paths(values))
    if nulls:
        raise ValueError(f"{chart}: values hold null at {', '.join(nulls)}; remove a chart default the "
                         "way the chart documents it (an enable flag, a full config override)")
    return values


def _known_by_templates(path: str, data: Mapping[str, Any]) -> str | None:
    """'whole' when the templates read ``path`` or above it, 'below' when only below it."""
    reads = data.get("templateReads", [])
    if any(path == t or path.startswith(t + ".") for t in reads):
        return "whole"
    if any(t.startswith(path + ".") for t in reads):
        return "below"
    return None


def unknown_keys(values: Mapping[str, Any], data: Mapping[str, Any], prefix: str = "",
                 shape: Any = None) -> Iterator[str]:
    """Yield every key path in ``values`` that the chart described by ``data`` does not know."""
    shape = data.get("defaults", {}) if shape is None else shape
    for key, value in values.items():
        path = f"{prefix}{key}"
        relative = path  # the chart's own path (subchart keys are checked from their own root)
        if not prefix and key in data.get("subcharts", {}):
            sub = data["subcharts"][key]
            parent_default = shape.get(key) if isinstance(shape, dict) else None
            merged = _merge_shapes(sub.get("defaults", {}), parent_default)
            if isinstance(value, dict):
                yield from (f"{key}.{p}" for p in unknown_keys(value, sub, "", merged))
            continue
        if relative in data.get("templatePassesThrough", []):
            continue
        default = shape.get(key) if isinstance(shape, dict) else None
        if isinstance(shape, dict) and key in shape:
            if isinstance(default, dict) and isinstance(value, dict):
                yield from unknown_keys(value, data, f"{path}.", default)
            continue  # a free-form default (empty map, list, scalar): anything may go there
        known = _known_by_templates(relative, data)
        if known == "whole":
            continue
        if known == "below" and isinstance(value, dict):
            yield from unknown_keys(value, data, f"{path}.", {})
            continue
        yield path


def _merge_shapes(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge_shapes(base.get(k), v) for k, v in over.items()}}
    return over if over is not None else base


def _validator(schema: Mapping[str, Any]) -> Any:
    # "http://json-schema.org/schema#" (several charts) means "the latest draft", as Helm reads it.
    if schema.get("$schema") == "http://json-schema.org/schema#":
        return jsonschema.Draft202012Validator(schema)
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)


def schema_problems(values: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """Problems of ``values`` against the chart's schema (and each subchart's, under its key)."""
    problems = []
    if data.get("schema"):
        validator = _validator(data["schema"])
        for error in sorted(validator.iter_errors(values), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
            problems.append(f"{where}: {error.message}")
    for name, sub in data.get("subcharts", {}).items():
        if isinstance(values.get(name), dict):
            problems += [f"{name}.{p}" for p in schema_problems(values[name], sub)]
    return problems


def release_problems(release: Mapping[str, Any]) -> list[str]:
    """Every problem of one release as ``helm-releases.yaml`` lists it."""
    name, chart, version = release.get("name"), str(release.get("chart")), str(release.get("version"))
    repo = release.get("repository")
    where = f"release {name} ({chart} {version} from {repo})"
    entries = index_entries()
    if repo not in entries:
        return [f"{where}: the repository is not in {INDEX.name} (make charts-refresh)"]
    if version not in entries[repo].get(chart, {}):
        published = sorted(entries[repo].get(chart, {}))
        return [f"{where}: version {version} is not in the repository's index (vendored: {published})"]
    values = release.get("values") or {}
    problems = [f"{where}: null at {p}" for p in null_paths(values)]
    data = load_chart_data(chart, version)
    if data is None:
        return [*problems, f"{where}: no vendored values data {values_file(chart, version).name}"]
    problems += [f"{where}: the chart does not know the value {p}" for p in unknown_keys(values, data)]
    problems += [f"{where}: schema: {p}" for p in schema_problems(values, data)]
    return problems


def releases_problems(releases: list[Mapping[str, Any]]) -> list[str]:
    return [p for release in releases for p in release_problems(release)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="helm-releases.yaml files (make manifests)")
    args = parser.parse_args(argv)
    problems = []
    for path in args.files:
        releases = (yaml.safe_load(path.read_text()) or {}).get("releases") or []
        problems += [f"{path}: {p}" for p in releases_problems(releases)]
        print(f"{path}: {len(releases)} releases checked")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
