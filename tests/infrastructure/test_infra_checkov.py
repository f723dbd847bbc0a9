"""checkov finds nothing in the rendered stacks but per-resource skips with reasons, and fails bad ones."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.checks import pods_as_deployment
from infra.manifests import write
from infrastructure.infra_cases import CASES

SKIP = re.compile(r"^(CKV2?_K8S_\d+)=(.{20,})$")  # a check id and a reason worth reading


def scan(checkov: Path, directory: Path) -> dict[str, Any]:
    """Run checkov offline on ``directory`` and return its JSON report."""
    result = subprocess.run(
        [str(checkov), "-d", str(directory), "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.stdout.strip(), result.stderr[-2000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.fixture(scope="module")
def rendered_dirs(render_case, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("manifests")
    return {case: write(render_case(case), root / case)[0].parent for case in CASES}


@pytest.fixture(scope="module")
def report(checkov: Path, rendered_dirs: dict[str, Path]) -> dict[str, Any]:
    return scan(checkov, next(iter(rendered_dirs.values())).parent.parent)


def test_no_failed_checks(report: dict[str, Any]):
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert report["summary"]["passed"] > 100
    assert report["summary"]["parsing_errors"] == 0
    assert failed == []


def test_every_skip_is_per_resource_with_a_reason_and_is_used(render_case, report: dict[str, Any]):
    declared = set()
    for case in CASES:
        for obj in render_case(case).objects:
            meta = obj["metadata"]
            for key, value in (meta.get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    match = SKIP.match(value)
                    assert match, (
                        f"{obj['kind']} {meta['name']}: {key}={value!r} needs a check id and a reason"
                    )
                    # checkov scans a Rollout's pods as the Deployment infra.manifests writes for it.
                    kind = "Deployment" if obj["kind"] == "Rollout" else obj["kind"]
                    declared.add((match.group(1), f"{kind}.{meta['namespace']}.{meta['name']}"))
    skipped = {(c["check_id"], c["resource"]) for c in report["results"].get("skipped_checks", [])}
    assert declared, "the stacks skip a few checks on purpose (image digests, pull policy, worker probes)"
    assert declared == skipped, "a skip that checkov does not use is stale: drop it"


def test_checkov_fails_a_deployment_that_breaks_policy(checkov: Path, render_case, tmp_path: Path):
    deployment = pods_as_deployment(copy.deepcopy(render_case("prod").one("Rollout", "lookout")))
    deployment["metadata"].pop("annotations", None)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True}
    del container["resources"]["requests"]["cpu"]
    del container["livenessProbe"]
    (tmp_path / "deployment.yaml").write_text(json.dumps(deployment))
    failed = {c["check_id"] for c in scan(checkov, tmp_path)["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_10", "CKV_K8S_8", "CKV_K8S_22"} <= failed
