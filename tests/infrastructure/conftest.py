"""Fixtures for the infra tests: stacks rendered under Pulumi's mock runtime, and synthetic repo files.

    render_case(name)  -> Rendered   one whole-program run per case in CASES, cached for the session
    case_files(name)   -> RepoFiles  the dashboards, rules and locust files that case deployed
    synthetic_files    -> RepoFiles  two dashboards, two rule files and a locust package (tmp dirs)
    checkov            -> Path       checkov from .venv-checkov (make checkov)
    render_with_url(make) -> (Rendered, component)  a component with a secret ``url``, rendered alone

Environment:
    LOOKOUT_REQUIRE_SERVICES=1  a missing checkov fails instead of skipping (CI)
    CHECKOV                     another checkov binary
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pulumi
import pytest
import yaml

from infra.mockrun import Rendered, render, run_program
from infra.stack import REPO_ROOT, RepoFiles, repo_files
from infrastructure.infra_cases import CASES, SYNTHETIC_LOCUST, SYNTHETIC_RULES

REQUIRE_SERVICES = os.environ.get("LOOKOUT_REQUIRE_SERVICES") == "1"
Component = TypeVar("Component", bound=pulumi.ComponentResource)


def render_with_url(make: Callable[[], Component]) -> tuple[Rendered, Component]:
    """Render the component ``make`` declares, exporting its ``url`` as ``url`` (as Pulumi keeps
    it, secret) and as ``url_plain`` (its value)."""
    found: dict[str, Any] = {}

    def program() -> None:
        found["component"] = component = make()
        pulumi.export("url", component.url)
        pulumi.export("url_plain", pulumi.Output.unsecret(component.url))

    return run_program(program, "test"), found["component"]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tmp repo with dashboards, rule files and a locust package, built like the real one."""
    root = tmp_path_factory.mktemp("repo")
    (root / "dashboards" / "rules").mkdir(parents=True)
    for name, title in (("lookout-overview.json", "Lookout overview"), ("Lookout_SLO.json", "Lookout SLO")):
        (root / "dashboards" / name).write_text(json.dumps({"title": title, "uid": name[:8], "panels": []}))
    for name, rules in SYNTHETIC_RULES.items():
        (root / "dashboards" / "rules" / name).write_text(yaml.safe_dump(rules, sort_keys=False))
    for path in ("dashboards/__init__.py", "dashboards/slo.yaml"):
        shutil.copy(REPO_ROOT / path, root / path)
    for path, text in SYNTHETIC_LOCUST.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


@pytest.fixture(scope="session")
def synthetic_files(synthetic_root: Path) -> RepoFiles:
    dashboards = synthetic_root / "dashboards"
    return RepoFiles(
        dashboards=tuple(sorted(dashboards.glob("*.json"))),
        rules=tuple(sorted((dashboards / "rules").glob("*.yaml"))),
        loadtests=repo_files(synthetic_root).loadtests,
    )


@pytest.fixture(scope="session")
def case_files(synthetic_files: RepoFiles) -> Callable[[str], RepoFiles]:
    def files(name: str) -> RepoFiles:
        kind = CASES[name][2]
        if kind == "synthetic":
            return synthetic_files
        real = repo_files()
        if kind == "repo+locust" and "loadtests/locustfile.py" not in real.loadtests:
            return RepoFiles(real.dashboards, real.rules, {**synthetic_files.loadtests, **real.loadtests})
        return real

    return files


@pytest.fixture(scope="session")
def render_case(case_files: Callable[[str], RepoFiles]) -> Callable[[str], Rendered]:
    cache: dict[str, Rendered] = {}

    def get(name: str) -> Rendered:
        if name not in cache:
            stack, overrides, _ = CASES[name]
            cache[name] = render(stack, overrides, case_files(name))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def checkov() -> Path:
    found = os.environ.get("CHECKOV") or (REPO_ROOT / ".venv-checkov" / "bin" / "checkov")
    path = Path(found)
    if not path.exists():
        reason = f"checkov is not installed at {path} (make checkov)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason}; LOOKOUT_REQUIRE_SERVICES=1 makes it mandatory")
        pytest.skip(reason)
    return path
