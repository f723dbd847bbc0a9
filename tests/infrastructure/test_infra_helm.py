"""Helm releases: every pinned chart is in its repository's vendored index, every value is one the
chart knows, no value is null, on every stack; and each check refuses what it is there to refuse."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import helm
from infra.components import Monitoring, MonitoringArgs
from infra.components.autoscaling import ADAPTER_CHART
from infra.components.database import CNPG_CHART
from infra.components.edge import CERT_MANAGER_CHART, GATEWAY_CHART
from infra.components.keda import KEDA_CHART
from infra.components.monitoring import KPS_CHART, LOKI_CHART, OTEL_CHART, TEMPO_CHART
from infra.components.probe import BLACKBOX_CHART
from infra.components.rollouts import ROLLOUTS_CHART
from infra.manifests import write
from infra.mockrun import render, run_program

PINS = [KPS_CHART, OTEL_CHART, TEMPO_CHART, LOKI_CHART, CNPG_CHART, ROLLOUTS_CHART, BLACKBOX_CHART,
        ADAPTER_CHART, CERT_MANAGER_CHART, GATEWAY_CHART, KEDA_CHART]


@pytest.fixture(scope="module")
def releases(render_case, tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """Each stack's helm-releases.yaml, as `make manifests` writes it."""
    found = {}
    for stack in ("dev", "staging", "prod"):
        rendered = render("staging") if stack == "staging" else render_case(stack)  # CASES has no staging
        out = tmp_path_factory.mktemp(stack)
        write(rendered, out)
        found[stack] = yaml.safe_load((out / "helm-releases.yaml").read_text())["releases"]
    return found


def release(releases, name: str, stack: str = "dev") -> dict[str, Any]:
    return copy.deepcopy(next(r for r in releases[stack] if r["name"] == name))


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_release_of_every_stack_passes_every_check(releases, stack: str):
    assert releases[stack], "a stack without releases would check nothing"
    assert helm.releases_problems(releases[stack]) == []


def test_the_checks_cover_every_chart_the_program_pins(releases):
    pinned = {(c, v, r) for c, v, r in PINS}
    seen = {(r["chart"], str(r["version"]), r["repository"]) for rs in releases.values() for r in rs}
    assert seen == pinned


@pytest.mark.parametrize("chart, version, repo", PINS)
def test_each_pin_is_a_published_entry_with_a_digest_and_values_data(chart: str, version: str, repo: str):
    entry = helm.index_entries()[repo][chart][version]
    assert entry["name"] == chart and str(entry["version"]) == version
    assert re.fullmatch(r"[0-9a-f]{64}", entry["digest"])
    if repo.startswith("oci://"):  # a registry's reference, its manifest digest above
        assert entry["urls"] == [f"{repo}/{chart}:{version}"]
    else:
        assert entry["urls"] and all(u.startswith("https://") and u.endswith(f"{chart}-{version}.tgz")
                                     for u in entry["urls"])
    data = helm.load_chart_data(chart, version)
    assert data is not None and (data["chart"], data["version"]) == (chart, version)
    assert data["appVersion"] == entry["appVersion"]
    source = data["source"]
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    # A chart's folder: under charts/, or at the top of a repository of charts (kedacore/charts).
    top_of_charts_repo = source["repository"].endswith("/charts") and source["path"] == chart
    assert "charts/" in source["path"] or top_of_charts_repo


def test_vendored_data_names_its_source_for_every_subchart():
    data = helm.load_chart_data(*KPS_CHART[:2])
    assert data is not None
    assert set(data["subcharts"]) >= {"grafana", "kube-state-metrics", "prometheus-node-exporter", "crds"}
    for sub in data["subcharts"].values():
        assert sub["version"] and re.fullmatch(r"[0-9a-f]{40}", sub["source"]["commit"])


def test_every_index_entry_is_a_pin():
    """Nothing vendored that the program does not install: a stale entry would hide a dropped pin."""
    vendored = {(chart, version, repo) for repo, charts in helm.index_entries().items()
                for chart, versions in charts.items() for version in versions}
    assert vendored == set(PINS)
    names = {p.name for p in helm.VALUES_DIR.glob("*.json")}
    assert names == {f"{c}-{v}.json" for c, v, _ in PINS}


# --- each check fails on what it is there to catch --------------------------------------------------

def set_path(values: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        values = values.setdefault(key, {})
    values[last] = value


@pytest.mark.parametrize("name, path", [
    ("tempo", "tempo.retentionPeriod"),                                 # a typo beside a real key
    ("kube-prometheus-stack", "prometheus.prometheusSpec.retentionn"),  # deep in the defaults
    ("kube-prometheus-stack", "grafana.sidecar.dashboards.lable"),      # a subchart's key
    ("kube-prometheus-stack", "kube-state-metrics.nope"),               # another subchart
    ("otel-collector", "configg"),                                      # top level
    ("cnpg", "resource"),                                               # singular for plural
])
def test_an_unknown_key_is_refused(releases, name: str, path: str):
    bad = release(releases, name)
    set_path(bad["values"], path, "x")
    assert any(f"does not know the value {path}" in p for p in helm.release_problems(bad))


@pytest.mark.parametrize("name, path", [
    ("kube-prometheus-stack", "alertmanager.config.inhibit_rules"),  # the chart passes it through whole
    ("otel-collector", "alternateConfig.connectors"),                # a free-form default ({})
    ("kube-prometheus-stack", "grafana.podLabels.team"),             # below an empty map
    ("tempo", "tempo.extraEnv"),                                     # a list
])
def test_keys_below_free_form_defaults_are_accepted(releases, name: str, path: str):
    good = release(releases, name)
    set_path(good["values"], path, [] if path.endswith("extraEnv") else {"a": 1})
    assert helm.release_problems(good) == []


@pytest.mark.parametrize("name, path", [
    ("tempo", "tempo.receivers.jaeger"),
    ("otel-collector", "alternateConfig.service.pipelines.logs"),
    ("kube-prometheus-stack", "grafana.admin.existingSecret"),
])
def test_a_null_anywhere_is_refused(releases, name: str, path: str):
    bad = release(releases, name)
    set_path(bad["values"], path, None)
    assert f"null at {path}" in " ".join(helm.release_problems(bad))


def test_a_version_the_repository_never_published_is_refused(releases):
    bad = release(releases, "tempo")
    bad["version"] = "1.16.1"  # the pin this check was written for: never in the index
    (problem,) = helm.release_problems(bad)
    assert "version 1.16.1 is not in the repository's index" in problem


def test_a_repository_without_a_vendored_index_is_refused(releases):
    bad = release(releases, "tempo")
    bad["repository"] = "https://grafana.github.io/helm-charts"
    (problem,) = helm.release_problems(bad)
    assert "repository is not in index.yaml" in problem


def test_a_value_the_schema_refuses_is_refused(releases):
    bad = release(releases, "otel-collector")
    bad["values"]["mode"] = "sidecar"
    assert any("schema: mode: 'sidecar' is not one of" in p for p in helm.release_problems(bad))


def test_the_command_line_reads_helm_releases_files_and_fails_on_a_problem(releases, tmp_path: Path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"releases": releases["prod"]}))
    assert helm.main([str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    broken = release(releases, "tempo")
    broken["values"]["tempo"]["receiverz"] = {}
    bad.write_text(yaml.safe_dump({"releases": [broken]}))
    assert helm.main([str(good), str(bad)]) == 1
    assert "does not know the value tempo.receiverz" in capsys.readouterr().out


def test_the_program_refuses_to_hand_helm_a_null():
    """A None reaches no release: Python's Pulumi SDK would drop it silently, so the program stops."""
    args = dataclasses.replace(MonitoringArgs("monitoring", (), (), ()), trace_retention=None)  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"tempo: values hold null at tempo\.retention"):
        run_program(lambda: Monitoring("monitoring", args), "test")


def test_without_nulls_names_every_null_and_passes_the_rest():
    assert helm.without_nulls("x", {"a": [1, {"b": False}]}) == {"a": [1, {"b": False}]}
    with pytest.raises(ValueError, match=r"null at a\[1\]\.b, c"):
        helm.without_nulls("x", {"a": [1, {"b": None}], "c": None})


# --- deriving a chart's data from the chart -----------------------------------------------------

CHART_FILES = {
    "Chart.yaml": "apiVersion: v2\nname: demo\nversion: 1.2.3\nappVersion: '9'\n"
                  "dependencies:\n  - name: sub\n    alias: child\n    version: 0.1.0\n",
    "values.yaml": "image: {tag: ''}\nextra: {}\nlist: []\nconfig: {receivers: {a: 1}}\nchild: {x: 1}\n",
    "values.schema.json": json.dumps({"$schema": "http://json-schema.org/schema#", "type": "object",
                                      "required": ["image"], "properties": {"image": {
                                          "type": "object", "description": "words",
                                          "properties": {"description": {"type": "string"}}}}}),
    "templates/deploy.yaml": "{{ .Values.image.tag }} {{ .Values.only.in.templates }}\n"
                             "{{ toYaml .Values.config | nindent 2 }}\n"
                             "{{ index .Values \"dash-key\" \"x\" }}\n"
                             "{{- with .Values.affinity }}\n  {{- toYaml . | nindent 8 }}\n{{- end }}\n",
    "charts/sub/Chart.yaml": "apiVersion: v2\nname: sub\nversion: 0.1.0\n",
    "charts/sub/values.yaml": "x: 1\ny: {z: 2}\n",
}


def packaged(files: dict[str, str], top: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, text in files.items():
            data = text.encode() if isinstance(text, str) else text
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_chart_data_reads_defaults_templates_schema_and_subcharts(tmp_path: Path):
    for path, text in CHART_FILES.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    data = helm.chart_data(helm.ChartFiles.from_dir(tmp_path), {"repository": "o/r"})
    assert (data["chart"], data["version"], data["source"]) == ("demo", "1.2.3", {"repository": "o/r"})
    assert data["defaults"]["image"] == {"tag": "str"} and data["defaults"]["extra"] == "map"
    assert {"only.in.templates", "dash-key.x"} <= set(data["templateReads"])
    assert set(data["templatePassesThrough"]) == {"config", "affinity"}
    assert "required" not in data["schema"] and "description" not in data["schema"]["properties"]["image"]
    assert data["schema"]["properties"]["image"]["properties"] == {"description": {"type": "string"}}
    assert data["subcharts"]["child"]["defaults"] == {"x": "int", "y": {"z": "int"}}
    ok = {"image": {"tag": "1"}, "only": {"in": {"templates": 1}}, "config": {"anything": 1},
          "affinity": {"a": 1}, "child": {"y": {"z": 3}}, "extra": {"k": 1}}
    assert list(helm.unknown_keys(ok, data)) == []
    bad = {"image": {"tagg": 1}, "only": {"out": 1}, "child": {"y": {"w": 1}}, "nope": 1}
    assert list(helm.unknown_keys(bad, data)) == ["image.tagg", "only.out", "child.y.w", "nope"]


def test_chart_data_reads_a_packaged_chart_with_packaged_subcharts():
    """As a repository serves it: one archive, subcharts as archives inside its charts/ folder."""
    files: dict[str, Any] = {k: v for k, v in CHART_FILES.items() if not k.startswith("charts/")}
    files["charts/sub-0.1.0.tgz"] = packaged({k[len("charts/sub/"):]: v for k, v in CHART_FILES.items()
                                              if k.startswith("charts/sub/")}, "sub")
    data = helm.chart_data(helm.ChartFiles.from_archive(packaged(files, "demo")))
    assert data["subcharts"]["child"]["version"] == "0.1.0"
    assert data["defaults"]["config"] == {"receivers": {"a": "int"}}
