"""make helm-render: each release pulled by digest and rendered with exactly the values the program
passes, then kubeconform over the lot; with stand-ins for helm and kubeconform (tests/standins)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import helm
from infra.delivery import helm_render
from infra.manifests import write
from infra.mockrun import render

STANDINS = Path(__file__).resolve().parents[1] / "standins"


@pytest.fixture(scope="module")
def releases_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dev")
    write(render("dev"), out)
    return out / "helm-releases.yaml"


@pytest.fixture
def standin_index(tmp_path: Path) -> Path:
    """The vendored index with each digest replaced by that of the stand-in's archive."""
    doc = yaml.safe_load(helm.INDEX.read_text())
    for body in doc["repositories"].values():
        for chart, entries in body["entries"].items():
            for entry in entries:
                entry["digest"] = hashlib.sha256(f"stand-in {chart} {entry['version']}".encode()).hexdigest()
    path = tmp_path / "index.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def standins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    states = {"helm": tmp_path / "helm-state.json", "kubeconform": tmp_path / "kubeconform-state.json"}
    monkeypatch.setenv("HELM", str(STANDINS / "helm"))
    monkeypatch.setenv("HELM_STANDIN_STATE", str(states["helm"]))
    monkeypatch.setenv("KUBECONFORM_STANDIN_STATE", str(states["kubeconform"]))
    return states


def state(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"calls": []}


def render_dev(releases_file: Path, index: Path, out: Path) -> int:
    return helm_render.main(["--stack", "dev", "--releases", str(releases_file), "--out", str(out),
                             "--index", str(index), "--kubeconform", str(STANDINS / "kubeconform")])


def test_every_release_is_pulled_by_digest_and_rendered_with_its_values(
        releases_file: Path, standin_index: Path, standins: dict[str, Path], tmp_path: Path):
    assert render_dev(releases_file, standin_index, tmp_path / "out") == 0
    releases = yaml.safe_load(releases_file.read_text())["releases"]
    calls = state(standins["helm"])["calls"]
    pulls = [c for c in calls if c[0] == "pull"]
    def pulled(c: list[str]) -> tuple[str, str, str]:  # a registry's chart is one reference, no --repo
        if c[1].startswith("oci://"):
            return c[1].rsplit("/", 1)[1], c[1].rsplit("/", 1)[0], c[c.index("--version") + 1]
        return c[1], c[c.index("--repo") + 1], c[c.index("--version") + 1]

    assert sorted(pulled(c) for c in pulls) == sorted(
        (r["chart"], r["repository"], str(r["version"])) for r in releases)
    templates = {c[1]: c for c in calls if c[0] == "template"}
    assert set(templates) == {r["name"] for r in releases}
    given = state(standins["helm"])["values"]
    for release in releases:
        call = templates[release["name"]]
        assert call[2].endswith(f"{release['chart']}-{release['version']}.tgz"), "the verified archive"
        assert call[call.index("--namespace") + 1] == release["namespace"]
        assert "--include-crds" in call and call[call.index("--kube-version") + 1] == "1.33.0"
        # prometheus-adapter's APIService is apiregistration.k8s.io/v1 only where Helm is told it exists.
        assert call[call.index("--api-versions") + 1] == "apiregistration.k8s.io/v1"
        assert yaml.safe_load(given[release["name"]]) == release["values"], "exactly the program's values"


def test_kubeconform_checks_every_rendering_strictly_with_the_charts_own_crds(
        releases_file: Path, standin_index: Path, standins: dict[str, Path], tmp_path: Path):
    out = tmp_path / "out"
    assert render_dev(releases_file, standin_index, out) == 0
    (call,) = state(standins["kubeconform"])["calls"]
    argv = call["argv"]
    assert "-strict" in argv and argv[argv.index("-kubernetes-version") + 1] == "1.33.0"
    assert f"{out}/schemas/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json" in argv
    assert sorted(a for a in argv if a.endswith(".yaml")) == sorted(str(p) for p in out.glob("*.yaml")
                                                                      if not p.name.endswith(".values.yaml"))
    assert json.loads((out / "schemas" / "servicemonitor_v1.json").read_text())["type"] == "object"
    # One per release of dev: argo-rollouts, loki, otel-logs, the blackbox exporter, the adapter,
    # Envoy Gateway, cert-manager and KEDA.
    assert call["kinds"].count("ConfigMap") == 12
    assert call["kinds"].count("APIService") == 2  # KEDA's external metrics, the adapter's custom metrics
    rendered = {p.stem: p for p in out.glob("*.yaml") if not p.name.endswith(".values.yaml")}
    assert helm_render.apiservice_problems(rendered) == []
    names = {release: [d["metadata"]["name"] for d in yaml.safe_load_all(path.read_text())
                       if d and d["kind"] == "APIService"] for release, path in rendered.items()}
    assert names["keda"] == ["v1beta1.external.metrics.k8s.io"]
    assert names["prometheus-adapter"] == ["v1beta1.custom.metrics.k8s.io"]


def test_an_archive_that_is_not_the_indexed_one_is_refused(
        releases_file: Path, standin_index: Path, standins: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HELM_STANDIN_TAMPER", "tempo")
    with pytest.raises(SystemExit, match=r"tempo-1\.16\.0\.tgz: SHA-256 .* is not the vendored digest"):
        render_dev(releases_file, standin_index, tmp_path / "out")
    assert not [c for c in state(standins["helm"])["calls"] if c[:2] == ["template", "tempo"]]


def test_an_invalid_rendering_fails_the_job(
        releases_file: Path, standin_index: Path, standins: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HELM_STANDIN_INVALID", "otel-collector")
    assert render_dev(releases_file, standin_index, tmp_path / "out") == 1


def test_values_the_chart_does_not_know_stop_it_before_helm_runs(
        releases_file: Path, standin_index: Path, standins: dict[str, Path], tmp_path: Path):
    doc = yaml.safe_load(releases_file.read_text())
    doc["releases"][0]["values"]["surprise"] = True
    bad = tmp_path / "helm-releases.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert render_dev(bad, standin_index, tmp_path / "out") == 1
    assert state(standins["helm"])["calls"] == []


def test_ci_renders_every_stack_and_the_required_check_waits_for_it():
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / ".github/workflows/ci.yml").read_text())
    job = doc["jobs"]["helm"]
    assert job["strategy"]["matrix"]["stack"] == ["dev", "staging", "prod"]
    assert [s["run"] for s in job["steps"] if "run" in s] == ["make charts-verify", "make helm-render"]
    (setup,) = [s for s in job["steps"] if s.get("uses", "").startswith("Azure/setup-helm@")]
    assert setup["with"]["version"].startswith("v3.")
    assert "helm" in doc["jobs"]["passed"]["needs"]


@pytest.mark.parametrize("release, service", [
    ("keda", "v1beta1.custom.metrics.k8s.io"),  # KEDA taking over the adapter's API
    ("prometheus-adapter", "v1beta1.external.metrics.k8s.io"),  # the adapter with external rules
])
def test_a_second_owner_of_a_metrics_api_fails_the_render(
        releases_file: Path, standin_index: Path, standins: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], release: str, service: str):
    monkeypatch.setenv("HELM_STANDIN_APISERVICE", f"{release}={service}")
    assert render_dev(releases_file, standin_index, tmp_path / "out") == 1
    assert f"APIService {service}: registered by" in capsys.readouterr().out
    assert not state(standins["kubeconform"])["calls"], "kubeconform never runs after a failed gate"


def test_metrics_server_s_api_belongs_to_no_release(tmp_path: Path):
    rendering = tmp_path / "keda.yaml"
    rendering.write_text("apiVersion: apiregistration.k8s.io/v1\nkind: APIService\n"
                         "metadata: {name: v1beta1.metrics.k8s.io}\n")
    (problem,) = helm_render.apiservice_problems({"keda": rendering})
    assert problem == ("APIService v1beta1.metrics.k8s.io: registered by keda, "
                       "but metrics-server (no release here) serves it")
