"""Generate the rule files and dashboards from dashboards/slo.yaml, or check they are up to date.

Usage:
    python -m dashboards.generate            # rewrite dashboards/rules/*.yaml and dashboards/*.json
    python -m dashboards.generate --check    # exit 1, naming the stale files, if any differ
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import HERE, RULES_DIR, SLO, load_slo

from . import dependencies
from .boards import dashboards
from .rules import rule_files

HEADER = "# Generated from dashboards/slo.yaml by `make dashboards` (dashboards/generate); do not edit.\n"


class _Literal(str):
    """A multi-line PromQL expression, written as a YAML block so it reads as it is written."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def _blocks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _blocks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_blocks(v) for v in value]
    return _Literal(value) if isinstance(value, str) and "\n" in value else value


def render(slo: SLO) -> dict[Path, str]:
    """Return every generated file's path and text."""
    files = {RULES_DIR / name: HEADER + yaml.dump(_blocks(content), Dumper=_Dumper, sort_keys=False,
                                                  width=1000, allow_unicode=True)
             for name, content in {**rule_files(slo), **dependencies.rule_files(slo)}.items()}
    encoder = JSONEncoder(sort_keys=True, indent=2)
    for name, model in dashboards(slo).items():
        # Round-trip through json so the committed file is plain, stable JSON (and Grafana's sidecar
        # reads exactly what the tests parse).
        files[HERE / name] = json.dumps(json.loads(encoder.encode(model)), indent=2, sort_keys=True) + "\n"
    return files


def stale(files: dict[Path, str]) -> list[Path]:
    """Return the files whose committed text differs from what the generator writes."""
    return [path for path, text in files.items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dashboards.generate",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files instead of writing them")
    args = parser.parse_args(argv)
    files = render(load_slo())
    if args.check:
        outdated = stale(files)
        for path in outdated:
            print(f"stale: {path.relative_to(HERE.parent)} (run `make dashboards`)")
        return 1 if outdated else 0
    RULES_DIR.mkdir(exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0
