"""`python -m infra.manifests` (make manifests) writes each object once, Helm releases, outputs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest
import yaml

from infra.manifests import REDACTED, parse_set
from infra.mockrun import run_program
from infra.stack import REPO_ROOT

BIN = Path(sys.executable).parent


def manifests(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.manifests", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for stack in ("dev", "prod"):
        out[stack] = tmp_path_factory.mktemp(stack)
        (out[stack] / "stale.yaml").write_text("left from an earlier run")
        result = manifests("--stack", stack, "--out", str(out[stack]))
        assert result.returncode == 0, result.stderr
        assert f"{stack}: " in result.stdout and "objects" in result.stdout
    return out


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_one_object_per_file_and_nothing_stale(stack: str, written: dict[str, Path]):
    files = sorted((written[stack] / "objects").glob("*.yaml"))
    assert len(files) >= 10
    assert not (written[stack] / "stale.yaml").exists()
    for path in files:
        (obj,) = list(yaml.safe_load_all(path.read_text()))
        assert list(obj)[:3] == ["apiVersion", "kind", "metadata"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_secret_values_are_redacted(stack: str, written: dict[str, Path]):
    secrets = [yaml.safe_load(p.read_text()) for p in (written[stack] / "objects").glob("secret-*.yaml")]
    values = [value for secret in secrets for value in (secret.get("stringData") or {}).values()]
    assert values and set(values) == {REDACTED}
    assert "mock-secretKey" not in "".join(p.read_text() for p in written[stack].rglob("*.yaml"))


def test_helm_releases_are_listed_with_their_values(written: dict[str, Path]):
    releases = {
        r["name"]: r for r in yaml.safe_load((written["dev"] / "helm-releases.yaml").read_text())["releases"]
    }
    assert set(releases) == {"kube-prometheus-stack", "otel-collector", "tempo", "loki", "otel-logs", "cnpg",
                             "argo-rollouts", "blackbox-exporter", "prometheus-adapter", "eg", "cert-manager",
                             "keda"}
    assert releases["kube-prometheus-stack"]["values"]["grafana"]["sidecar"]["dashboards"]["enabled"] is True
    assert all(r["version"] and r["repository"].startswith(("https://", "oci://")) for r in releases.values())
    assert releases["eg"]["chart"] == "gateway-helm" and releases["eg"]["repository"] == "oci://docker.io/envoyproxy"
    prod = yaml.safe_load((written["prod"] / "helm-releases.yaml").read_text())["releases"]
    assert "cnpg" not in {r["name"] for r in prod}, "prod uses an external database"


def test_outputs_are_written_with_secrets_hidden(written: dict[str, Path]):
    outputs = yaml.safe_load((written["prod"] / "outputs.yaml").read_text())
    assert outputs["loadBalancerAddress"] == "203.0.113.10"
    assert outputs["namespace"] == "lookout"
    assert outputs["grafanaAddress"].startswith("http://grafana.monitoring")
    assert outputs["grafanaAdminPassword"] == "[secret]"


@pytest.mark.parametrize("version", ["1.30.0", "1.33.0"])
def test_kubernetes_validate_cli_accepts_the_built_in_objects(version: str, written: dict[str, Path]):
    files = [
        p
        for stack in written.values()
        for p in (stack / "objects").glob("*.yaml")
        if yaml.safe_load(p.read_text())["apiVersion"].split("/")[0]
        not in ("monitoring.coreos.com", "postgresql.cnpg.io", "argoproj.io")
    ] + [p for stack in written.values() for p in (stack / "policy").glob("*.yaml")]  # custom: infra.crds
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", version, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_cli_rejects_a_typo(written: dict[str, Path], tmp_path: Path):
    deployment = yaml.safe_load((written["dev"] / "policy" / "rollout-lookout-lookout.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    (tmp_path / "broken.yaml").write_text(json.dumps(deployment))
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", "1.30.0", str(tmp_path / "broken.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0 and "paht" in result.stdout + result.stderr


def test_set_overrides_config_with_declared_types():
    assert parse_set(
        ["loadtestEnabled=true", "minReplicas=4", "image=web:1", "loadBalancerSourceRanges=[]"]
    ) == {"loadtestEnabled": True, "minReplicas": 4, "image": "web:1", "loadBalancerSourceRanges": []}
    with pytest.raises(SystemExit, match="not a config key"):
        parse_set(["replicas=3"])
    with pytest.raises(ValueError, match="must be of type 'integer'"):
        parse_set(["minReplicas=many"])


def test_the_load_generator_renders_from_the_repo_or_says_what_is_missing(tmp_path: Path):
    result = manifests("--stack", "dev", "--out", str(tmp_path), "--set", "loadtestEnabled=true")
    if (REPO_ROOT / "loadtests" / "locustfile.py").exists():
        assert result.returncode == 0, result.stderr
        assert list((tmp_path / "objects").glob("deployment-lookout-loadtest-*.yaml"))
    else:
        assert result.returncode != 0 and "no loadtests/locustfile.py" in result.stderr


def test_rendering_brings_its_own_event_loop():
    """Pulumi's mock runtime needs an event loop from its first resource on (the root stack that
    set_mocks builds). Python 3.14 no longer makes one on demand, so a renderer that counted on
    it fails there on every stack (3.12 and 3.13 warn). With no current loop, as on 3.14 in a
    fresh process, the program still renders, and the runner leaves no loop of its own behind."""
    asyncio.set_event_loop(None)  # from here on asyncio makes no loop on demand, on any version
    rendered = run_program(lambda: pulumi.export("answer", 42), "test")
    assert rendered.outputs == {"answer": 42}
    with pytest.raises(RuntimeError, match="no current event loop"):
        asyncio.get_event_loop()
