"""compose.yaml: valid against the compose spec, everything it refers to exists, and the local
Prometheus, collector and Grafana fit the app, the rules and the dashboards. Each check refuses a
broken file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from delivery.conftest import run
from infra.delivery.compose_check import check, host_path
from loadtests.harness import ROOT

COMPOSE = ROOT / "compose.yaml"
COMPOSE_DIR = ROOT / ".ci" / "compose"


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """compose.yaml with what it mounts, in a tmp folder to break."""
    for name in ("compose.yaml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(COMPOSE_DIR, tmp_path / ".ci" / "compose")
    shutil.copytree(ROOT / "dashboards", tmp_path / "dashboards",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_compose_spec_accepts_compose_yaml(tool):
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_spec_refuses_a_broken_file(tool, tmp_path: Path):
    broken = load()
    broken["services"]["app"]["ports"] = "8000"  # a list is required
    broken["services"]["app"]["restart_policy"] = "always"  # no such key
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path).returncode == 1


def test_compose_yaml_has_the_whole_loop_pinned():
    services = load()["services"]
    expected = {"app", "migrate", "postgres", "prometheus", "grafana", "otel-collector", "jaeger", "valkey",
                "postgres-exporter", "redis-exporter", "blackbox-exporter"}
    assert expected <= set(services)
    assert check(COMPOSE) == []


def test_the_app_runs_as_in_kubernetes():
    services = load()["services"]
    app = services["app"]
    assert app["read_only"] is True and app["tmpfs"] == ["/tmp"]
    assert app["environment"]["LOOKOUT_ENV"] == "production"
    assert {"SECRET_KEY_FILE", "JWT_PRIVATE_KEY_FILE", "JWT_KEY_ID"} <= set(app["environment"])
    assert services["migrate"]["command"] == ["flask", "--app", "app", "db", "upgrade"]
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert all(str(p).startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", [])), \
        "only the loopback address is published"


def test_traces_flow_app_to_collector_to_jaeger():
    services = load()["services"]
    collector = yaml.safe_load((COMPOSE_DIR / "otel-collector.yaml").read_text())
    endpoint = services["app"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    port = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].split(":")[1]
    assert endpoint == f"http://otel-collector:{port}"
    exporters = collector["service"]["pipelines"]["traces"]["exporters"]
    assert [collector["exporters"][e]["endpoint"] for e in exporters] == ["http://jaeger:4318"]


def test_prometheus_scrapes_the_metrics_port_as_the_job_the_rules_select():
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    jobs = {c["job_name"]: c for c in config["scrape_configs"]}
    assert jobs["lookout-metrics"]["static_configs"][0]["targets"] == ["app:9100"]
    assert host_path(load()["services"]["prometheus"], config["rule_files"][0], ROOT).parent == \
        (ROOT / "dashboards" / "rules").resolve()


def test_prometheus_scrapes_the_dependencies_and_probes_the_app_as_the_cluster_does():
    from dashboards.generate.dependencies import DEPS
    from infra.components.probe import blackbox_config, module_for

    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    jobs = {c["job_name"]: c for c in config["scrape_configs"]}
    services = load()["services"]
    for job, service in ((DEPS.database_job, "postgres-exporter"), (DEPS.store_job, "redis-exporter")):
        (target,) = jobs[job]["static_configs"][0]["targets"]
        assert target.split(":")[0] == service and service in services
    probe = jobs[DEPS.probe_job]
    (url,) = probe["static_configs"][0]["targets"]
    assert probe["params"]["module"] == [module_for(url)]
    assert probe["relabel_configs"][-1]["replacement"].split(":")[0] == "blackbox-exporter"
    # The compose exporter runs the cluster's modules, the ones the live test runs.
    assert yaml.safe_load((COMPOSE_DIR / "blackbox.yml").read_text()) == blackbox_config()
    # The images are the releases the program pins.
    from infra.components.exporters import POSTGRES_EXPORTER_IMAGE, REDIS_EXPORTER_IMAGE
    assert services["postgres-exporter"]["image"] == POSTGRES_EXPORTER_IMAGE
    assert services["redis-exporter"]["image"] == REDIS_EXPORTER_IMAGE


def test_grafana_can_serve_every_dashboard_and_link_exemplars_to_traces():
    sources = yaml.safe_load((COMPOSE_DIR / "grafana" / "datasources.yaml").read_text())["datasources"]
    by_uid = {s["uid"]: s for s in sources}
    prometheus = next(s for s in sources if s["type"] == "prometheus")
    for link in prometheus["jsonData"]["exemplarTraceIdDestinations"]:
        assert by_uid[link["datasourceUid"]]["type"] in {"jaeger", "tempo"}
    types = {s["type"] for s in sources}
    for board in ROOT.glob("dashboards/*.json"):
        used = {d.get("type") for d in _datasources(json.loads(board.read_text())) if isinstance(d, dict)}
        assert used - {None, "grafana", "datasource"} <= types, f"{board.name} needs a missing data source"


def _datasources(node: object) -> list[object]:
    found: list[object] = []
    if isinstance(node, dict):
        found += [node["datasource"]] if "datasource" in node else []
        for value in node.values():
            found += _datasources(value)
    elif isinstance(node, list):
        for value in node:
            found += _datasources(value)
    return found


def _edit(root: Path, relative: str, old: str, new: str) -> None:
    path = root / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("relative, old, new, problem", [
    ("compose.yaml", "./.ci/compose/prometheus.yml:", "./.ci/compose/prometheus.yaml:",
     "mount source ./.ci/compose/prometheus.yaml does not exist"),
    ("compose.yaml", "image: grafana/grafana:11.6.0", "image: grafana/grafana", "is not pinned to a version"),
    ("compose.yaml", "image: jaegertracing/jaeger:2.14.1", "image: jaegertracing/jaeger:latest",
     "is not pinned to a version"),
    ("compose.yaml", "- ./dashboards/rules:/etc/prometheus/rules:ro",
     "- ./dashboards:/etc/prometheus/rules:ro", "do not load the repo's dashboards/rules"),
    (".ci/compose/grafana/dashboards.yaml", "path: /var/lib/grafana/dashboards/lookout",
     "path: /var/lib/grafana/dashboards", "where dashboards/ is not mounted"),
    ("Dockerfile", "", "", "build needs Dockerfile"),
])
def test_the_reference_check_refuses_a_broken_setup(repo_copy: Path, relative: str, old: str, new: str,
                                                     problem: str):
    if relative == "Dockerfile":
        (repo_copy / "Dockerfile").unlink()
    else:
        _edit(repo_copy, relative, old, new)
    found = check(repo_copy / "compose.yaml")
    assert any(problem in p for p in found), found


def test_a_rule_selecting_a_job_prometheus_does_not_scrape_is_refused(repo_copy: Path):
    rule = {"groups": [{"name": "t", "rules": [
        {"alert": "LookoutDown", "expr": 'up{job="lookout"} == 0'},
        {"record": "lookout:ok", "expr": 'sum(up{job="lookout-metrics"})'}]}]}
    (repo_copy / "dashboards" / "rules" / "t.yaml").write_text(yaml.safe_dump(rule))
    found = check(repo_copy / "compose.yaml")
    assert len(found) == 1 and 'LookoutDown selects job="lookout"' in found[0], found


def test_the_laptop_runs_the_mail_catcher_the_stacks_run():
    """compose's Mailpit is the release the dev and kind stacks pin (infra/components/mail.py)."""
    from infra.components.mail import MAILPIT_IMAGE

    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert services["mailpit"]["image"] == MAILPIT_IMAGE.split("@")[0]
