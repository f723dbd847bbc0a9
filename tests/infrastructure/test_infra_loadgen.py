"""LoadGenerator: off by default; when on, Locust runs the repo's files against the service in-cluster."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.components import LoadGenerator, LoadGeneratorArgs, Peer
from infra.components.loadgen import CONFIGMAP_LIMIT, FILES_DIR, configmap_key
from infra.components.pods import selector
from infra.mockrun import Rendered, run_program
from infra.stack import REPO_ROOT, repo_files

TARGET = Peer(port=8000, namespace="lookout", pod_labels=selector("lookout", "server"))
URL = "http://lookout.lookout.svc.cluster.local:80"


def build(files: dict[str, str], **changes: Any) -> Rendered:
    args = dataclasses.replace(
        LoadGeneratorArgs(
            files=files, target_url=URL, target=TARGET, workers=3, pip_packages=("PyYAML==6.0.3",)
        ),
        **changes,
    )
    return run_program(lambda: LoadGenerator("lt", args), "test")


@pytest.fixture(scope="module")
def rendered(synthetic_files) -> Rendered:
    return build(dict(synthetic_files.loadtests))


def deployment(rendered: Rendered, role: str) -> dict[str, Any]:
    return rendered.one("Deployment", f"lt-{role}")


@pytest.mark.parametrize("case", ["dev", "prod"])
def test_off_by_default(case: str, render_case):
    rendered = render_case(case)
    assert not [
        o for o in rendered.objects if "loadtest" in o["metadata"].get("namespace", o["metadata"]["name"])
    ]
    assert "lookout:loadtest:LoadGenerator" not in rendered.components.values()
    assert "locustWebUrl" not in rendered.outputs


def test_on_in_the_whole_program(render_case):
    rendered = render_case("dev-synthetic-loadtest")
    assert rendered.components["lookout-loadtest"] == "lookout:loadtest:LoadGenerator"
    master = rendered.one("Deployment", "lookout-loadtest-master")["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert master["args"][master["args"].index("--host") + 1] == rendered.outputs["serviceUrl"]
    assert rendered.outputs["locustWebUrl"] == "http://lookout-loadtest-master.lookout-loadtest:8089"


def test_files_are_mounted_at_their_repo_paths(rendered: Rendered, synthetic_files):
    files = rendered.one("ConfigMap")
    assert files["data"] == {configmap_key(p): text for p, text in synthetic_files.loadtests.items()}
    for role in ("master", "worker"):
        spec = deployment(rendered, role)["spec"]["template"]["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "files")["configMap"]
        assert volume["name"] == files["metadata"]["name"]
        assert sorted(item["path"] for item in volume["items"]) == sorted(synthetic_files.loadtests)
        env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
        assert env["PYTHONPATH"].split(":")[0] == FILES_DIR


def test_mounted_layout_imports_loadtests_and_the_slo_loader(rendered: Rendered, tmp_path: Path):
    """Lay the ConfigMap out as the kubelet does and import the locustfile the way Locust will."""
    files = rendered.one("ConfigMap")["data"]
    items = next(
        v
        for v in deployment(rendered, "master")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "files"
    )["configMap"]["items"]
    for item in items:
        (tmp_path / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / item["path"]).write_text(files[item["key"]])
    code = "import loadtests.locustfile as f; from dashboards import load_slo; print(load_slo().service)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "lookout"


def test_master_and_workers(rendered: Rendered):
    master = deployment(rendered, "master")
    worker = deployment(rendered, "worker")
    assert (master["spec"]["replicas"], worker["spec"]["replicas"]) == (1, 3)
    args = master["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["-f", f"{FILES_DIR}/loadtests/locustfile.py"] and "--master" in args
    assert args[args.index("--host") + 1] == URL and "--autostart" not in args
    worker_args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert worker_args[-3:] == ["--worker", "--master-host", "lt-master.lookout-loadtest.svc.cluster.local"]
    service = rendered.one("Service")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"master": 5557, "web": 8089}
    assert master["spec"]["template"]["spec"]["containers"][0]["image"] == "locustio/locust:2.43.1"


def test_run_time_starts_the_run_by_itself(synthetic_files):
    args = deployment(
        build(dict(synthetic_files.loadtests), run_time="10m", users=200, spawn_rate=20), "master"
    )["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--autostart") :] == [
        "--autostart",
        "--users",
        "200",
        "--spawn-rate",
        "20",
        "--run-time",
        "10m",
    ]


def test_packages_come_from_an_init_container_with_https_egress(rendered: Rendered, synthetic_files):
    init = deployment(rendered, "master")["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"][:3] == ["python", "-m", "pip"] and init["command"][-1] == "PyYAML==6.0.3"
    egress = rendered.one("NetworkPolicy")["spec"]["egress"]
    assert egress[-1]["ports"] == [{"protocol": "TCP", "port": 443}]
    assert egress[-1]["to"][0]["ipBlock"]["except"] == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    bare = build(dict(synthetic_files.loadtests), pip_packages=())
    assert deployment(bare, "master")["spec"]["template"]["spec"]["initContainers"] == []
    assert all(rule["ports"][0]["port"] != 443 for rule in bare.one("NetworkPolicy")["spec"]["egress"])


def test_network_policy_reaches_the_service_pods_and_nothing_else(rendered: Rendered):
    spec = rendered.one("NetworkPolicy")["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "lt"}}
    assert TARGET.rule() in spec["egress"]
    assert spec["ingress"][0]["from"] == [{"podSelector": {"matchLabels": selector("lt", "worker")}}]
    assert [r["ports"][0]["port"] for r in spec["egress"]] == [53, 5557, 8000, 443]


def test_every_real_locust_file_is_carried():
    """Grows with loadtests/: every .py file there, plus the SLO loader it imports."""
    carried = repo_files().loadtests
    real = {
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "loadtests").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert real <= set(carried)
    assert {"dashboards/__init__.py", "dashboards/slo.yaml"} <= set(carried)


def test_repo_files_walks_nested_packages(synthetic_root: Path):
    assert sorted(repo_files(synthetic_root).loadtests) == [
        "dashboards/__init__.py",
        "dashboards/slo.yaml",
        "loadtests/__init__.py",
        "loadtests/locustfile.py",
        "loadtests/personas.py",
        "loadtests/shapes/__init__.py",
    ]


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ({"loadtests/other.py": ""}, "no loadtests/locustfile.py"),
        ({"loadtests/locustfile.py": "", "loadtests.locustfile.py": ""}, "one ConfigMap key"),
        ({"loadtests/locustfile.py": "x" * (CONFIGMAP_LIMIT + 1)}, "more than a ConfigMap holds"),
    ],
)
def test_file_sets_that_cannot_run_are_refused(files: dict[str, str], error: str):
    with pytest.raises(ValueError, match=error):
        build(files)
