"""LoadGenerator: off by default; when on, Locust runs the repo's files against the service in-cluster."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from infra.components import LoadGenerator, LoadGeneratorArgs, Peer
from infra.components.loadgen import CONFIGMAP_LIMIT, CREDENTIALS_DIR, FILES_DIR, configmap_key
from infra.components.pods import selector
from infra.config import ConfigError
from infra.mockrun import Rendered, run_program
from infra.stack import REPO_ROOT, locked_requirements, repo_files
from loadtests.harness import LocalService, free_port, launch, stop

TARGET = Peer(port=8000, namespace="lookout", pod_labels=selector("lookout", "server"))
URL = "http://lookout.lookout.svc.cluster.local:80"
REQUIREMENTS = locked_requirements(["PyYAML"])
ADMIN_VARS = ("LOOKOUT_LOADTEST_ADMIN_EMAIL", "LOOKOUT_LOADTEST_ADMIN_PASSWORD")
CREDENTIALS = dict(zip(ADMIN_VARS, ("admin@example.com", "loadgen-test-password"), strict=True))


def build(files: dict[str, str], **changes: Any) -> Rendered:
    args = dataclasses.replace(
        LoadGeneratorArgs(
            files=files, target_url=URL, target=TARGET, workers=3, pip_requirements=REQUIREMENTS,
            credentials=CREDENTIALS,
        ),
        **changes,
    )
    return run_program(lambda: LoadGenerator("lt", args), "test")


@pytest.fixture(scope="module")
def rendered(synthetic_files) -> Rendered:
    return build(dict(synthetic_files.loadtests))


def files_configmap(rendered: Rendered) -> dict[str, Any]:
    (files,) = [c for c in rendered.find("ConfigMap") if "requirements.txt" not in c["data"]]
    return files


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
    # Inside the cluster, straight to the app's Service (its policy admits the load generator).
    assert master["args"][master["args"].index("--host") + 1] == "http://lookout.lookout.svc.cluster.local:80"
    assert rendered.outputs["locustWebUrl"] == "http://lookout-loadtest-master.lookout-loadtest:8089"


def test_files_are_mounted_at_their_repo_paths(rendered: Rendered, synthetic_files):
    files = files_configmap(rendered)
    assert files["data"] == {configmap_key(p): text for p, text in synthetic_files.loadtests.items()}
    for role in ("master", "worker"):
        spec = deployment(rendered, role)["spec"]["template"]["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "files")["configMap"]
        assert volume["name"] == files["metadata"]["name"]
        assert sorted(item["path"] for item in volume["items"]) == sorted(synthetic_files.loadtests)
        env = {e["name"]: e["value"] for e in spec["containers"][0]["env"] if "value" in e}
        assert env["PYTHONPATH"].split(":")[0] == FILES_DIR


def test_mounted_layout_imports_loadtests_and_the_slo_loader(rendered: Rendered, tmp_path: Path):
    """Lay the ConfigMap out as the kubelet does and import the locustfile the way Locust will."""
    files = files_configmap(rendered)["data"]
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


@pytest.fixture(scope="module")
def bounded(synthetic_files) -> Rendered:
    return build(dict(synthetic_files.loadtests), run_time="10m", run_seconds=600, users=200, spawn_rate=20)


def test_a_run_time_makes_a_bounded_run_of_jobs(bounded: Rendered):
    assert bounded.find("Deployment") == []
    master, worker = bounded.one("Job", "lt-master"), bounded.one("Job", "lt-worker")
    args = master["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--autostart") :] == [
        "--autostart", "--autoquit", "0", "--users", "200", "--spawn-rate", "20", "--run-time", "10m",
        "--expect-workers", "3", "--expect-workers-max-wait", "300"]
    # The master's exit code is the verdict: never retried, never restarted in place.
    assert master["spec"]["backoffLimit"] == 0
    assert master["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert (worker["spec"]["parallelism"], worker["spec"]["completions"]) == (3, 3)
    assert worker["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    for job in (master, worker):
        assert job["spec"]["activeDeadlineSeconds"] == 600 + 300 + 900
        assert job["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    assert "readinessProbe" not in master["spec"]["template"]["spec"]["containers"][0]


def test_the_master_logs_in_with_credentials_from_a_secret(rendered: Rendered, bounded: Rendered):
    for objects in (rendered, bounded):
        secret = objects.one("Secret")
        assert secret["stringData"] == CREDENTIALS
        kind = "Deployment" if objects is rendered else "Job"
        pod = objects.one(kind, "lt-master")["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "credentials")
        assert volume["secret"]["secretName"] == secret["metadata"]["name"]
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "credentials"]
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert {var: env[f"{var}_FILE"] for var in ADMIN_VARS} == {
            var: f"{mount['mountPath']}/{var}" for var in ADMIN_VARS}  # files, read by loadtests/options.py
        worker = objects.one(kind, "lt-worker")["spec"]["template"]["spec"]
        assert "credentials" not in str(worker)  # workers get the options from the master
        others = [o for o in objects.objects if o is not secret]
        assert CREDENTIALS["LOOKOUT_LOADTEST_ADMIN_PASSWORD"] not in str(others)


def test_packages_come_from_an_init_container_hash_checked_with_https_egress(rendered: Rendered,
                                                                             synthetic_files):
    spec = deployment(rendered, "master")["spec"]["template"]["spec"]
    init = spec["initContainers"][0]
    assert init["command"][:3] == ["python", "-m", "pip"] and "--require-hashes" in init["command"]
    assert init["command"][-2:] == ["--requirement", "/mnt/requirements/requirements.txt"]
    volume = next(v for v in spec["volumes"] if v["name"] == "requirements")["configMap"]["name"]
    requirements = rendered.one("ConfigMap", volume)["data"]["requirements.txt"]
    assert requirements == REQUIREMENTS
    for line in requirements.splitlines():
        assert re.fullmatch(r"[a-z0-9-]+==[\w.]+( --hash=sha256:[0-9a-f]{64})+", line), line
    egress = rendered.one("NetworkPolicy")["spec"]["egress"]
    assert egress[-1]["ports"] == [{"protocol": "TCP", "port": 443}]
    assert egress[-1]["to"][0]["ipBlock"]["except"] == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    bare = build(dict(synthetic_files.loadtests), pip_requirements="")
    assert deployment(bare, "master")["spec"]["template"]["spec"]["initContainers"] == []
    assert all(rule["ports"][0]["port"] != 443 for rule in bare.one("NetworkPolicy")["spec"]["egress"])


def test_network_policy_reaches_the_service_pods_and_nothing_else(rendered: Rendered):
    spec = rendered.one("NetworkPolicy")["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "lt"}}
    assert TARGET.rule() in spec["egress"]
    assert spec["ingress"][0]["from"] == [{"podSelector": {"matchLabels": selector("lt", "worker")}}]
    assert [r["ports"][0]["port"] for r in spec["egress"]] == [53, 5557, 8000, 443]


PROMETHEUS = Peer(port=9090, namespace="monitoring", pod_labels={"app.kubernetes.io/name": "prometheus"})
PROMETHEUS_URL = "http://kps-prometheus.monitoring.svc.cluster.local:9090"


def test_the_master_reads_the_notifiers_latency_from_prometheus(synthetic_files):
    """The writers' users are emailed: the master gets Prometheus's address and may reach it; the
    workers get neither."""
    watched = build(dict(synthetic_files.loadtests), prometheus_url=PROMETHEUS_URL, prometheus=PROMETHEUS)

    def env(role: str) -> dict[str, str]:
        container = deployment(watched, role)["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert env("master")["LOOKOUT_LOADTEST_PROMETHEUS_URL"] == PROMETHEUS_URL
    assert "LOOKOUT_LOADTEST_PROMETHEUS_URL" not in env("worker")
    egress = watched.one("NetworkPolicy")["spec"]["egress"]
    assert PROMETHEUS.rule() in egress
    assert [r["ports"][0]["port"] for r in egress] == [53, 5557, 8000, 9090, 443]


@pytest.mark.parametrize("changes", [{"prometheus_url": PROMETHEUS_URL}, {"prometheus": PROMETHEUS}])
def test_prometheus_without_its_egress_rule_or_address_is_refused(synthetic_files, changes):
    with pytest.raises(ValueError, match="prometheus_url and prometheus go together"):
        build(dict(synthetic_files.loadtests), **changes)


def test_the_masters_email_report_needs_nothing_the_locust_image_lacks(tmp_path: Path):
    """The locust image has requests but neither prometheus_client nor the repository's infra/:
    the email report must run without them (the master imports it when the run ends)."""
    code = """
import sys
for name in ("prometheus_client", "infra", "matplotlib"):
    sys.modules[name] = None  # an import of it now fails, as in the image
import loadtests.locustfile
from loadtests import emails, notifier_watch
result = emails.EmailResult(1, 1, 1, 0.1, 0.1, 0.1, 1.0, 60.0, 1.0, target=0.99)
print(*emails.email_section(result))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "**PASS**" in result.stdout


def test_the_stack_points_the_master_at_its_prometheus(render_case):
    rendered = render_case("dev-synthetic-loadtest")
    pod = rendered.one("Deployment", "lookout-loadtest-master")["spec"]["template"]["spec"]
    master = pod["containers"][0]
    url = {e["name"]: e.get("value") for e in master["env"]}["LOOKOUT_LOADTEST_PROMETHEUS_URL"]
    assert url.startswith("http://kps-prometheus.") and url.endswith(":9090")
    egress = rendered.one("NetworkPolicy", "lookout-loadtest")["spec"]["egress"]
    ports = [r["ports"][0]["port"] for r in egress]
    assert 9090 in ports


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


def test_requirements_are_the_locks_versions_and_hashes():
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    (pyyaml,) = [p for p in lock["package"] if p["name"] == "pyyaml"]
    line = locked_requirements(["PyYAML"]).strip()
    assert line.startswith(f"pyyaml=={pyyaml['version']} ")
    assert line.count("--hash=") == len(pyyaml["wheels"]) + 1  # every wheel and the sdist
    assert locked_requirements([]) == ""
    with pytest.raises(ConfigError, match=r"loadtestPipPackages: 'not-a-locked-package' is not in uv\.lock"):
        locked_requirements(["not-a-locked-package"])


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


def job_run(tmp_path: Path, target: str, credentials: dict[str, str]) -> tuple[int, str]:
    """Run the bounded run's master and worker Jobs as the kubelet would (files laid out as the
    ConfigMap mounts them, the credentials as the Secret sets them), on 127.0.0.1 and free ports;
    return the master's exit code and output."""
    rendered = build(repo_files().loadtests, run_time="8s", run_seconds=8, users=8, spawn_rate=8,
                     workers=1, credentials=credentials, pip_requirements="")
    files = files_configmap(rendered)["data"]
    root = tmp_path / "files"
    master_job, worker_job = rendered.one("Job", "lt-master"), rendered.one("Job", "lt-worker")
    for item in next(v for v in master_job["spec"]["template"]["spec"]["volumes"]
                     if v["name"] == "files")["configMap"]["items"]:
        (root / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (root / item["path"]).write_text(files[item["key"]])
    master_port, web_port = free_port(), free_port()
    ports = {"--master-bind-port": str(master_port), "--web-port": str(web_port), "--host": target}

    def command(job: dict[str, Any], changes: dict[str, str]) -> list[str]:
        args = [str(a).replace(FILES_DIR, str(root)) for a in
                job["spec"]["template"]["spec"]["containers"][0]["args"]]
        for flag, value in changes.items():
            args[args.index(flag) + 1] = value
        return [sys.executable, "-m", "locust", *args]

    # The Secret's keys as the kubelet mounts them; the master's variables point at them.
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    for key, value in rendered.one("Secret")["stringData"].items():
        (secret_dir / key).write_text(value)
    master_env = {e["name"]: e["value"].replace(CREDENTIALS_DIR, str(secret_dir))
                  for e in master_job["spec"]["template"]["spec"]["containers"][0]["env"]
                  if e["name"].endswith("_FILE")}
    environ = {k: v for k, v in os.environ.items()
               if k != "LOCUST_SKIP_MONKEY_PATCH" and not k.startswith("LOOKOUT_LOADTEST_ADMIN")}
    environ |= {"PYTHONPATH": str(root), "HOME": str(tmp_path)}
    log = tmp_path / "master.log"
    with log.open("w") as out:
        # Busier users than the stack's (a few hundred requests): one slow request on a shared
        # machine must not decide the p95 of a few dozen.
        master = launch([*command(master_job, ports), "--think-time-scale", "0.2"],
                        env={**environ, **master_env},
                        cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        worker_command = [*command(worker_job, {"--master-host": "127.0.0.1"}),
                          "--master-port", str(master_port)]
        worker = launch(worker_command, env=environ, cwd=tmp_path, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    try:
        code = master.wait(120)
        worker.wait(30)  # the master ends the run: the worker Job completes too
        assert worker.returncode == 0
    finally:
        stop(master)
        stop(worker)
    return code, log.read_text()


@pytest.mark.slow
def test_the_jobs_verdict_is_the_slo_gates(tmp_path: Path):
    """A real master and worker: passing the gate exits 0; an account that cannot log in (the
    SetupError of a generator without credentials) exits 1, which fails the master Job."""
    environ = {**os.environ, "PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "8",
               "GUNICORN_WORKERS": "2"}
    environ.pop("DATABASE_URL", None)
    with LocalService(tmp_path / "service", environ) as service:
        good = dict(zip(ADMIN_VARS, (service.admin_email, service.admin_password), strict=True))
        passed, passed_log = job_run(tmp_path / "good", service.url, good)
        bad = {**good, "LOOKOUT_LOADTEST_ADMIN_PASSWORD": "not-the-admins-password"}
        failed, failed_log = job_run(tmp_path / "bad", service.url, bad)
    assert passed == 0, passed_log[-3000:]
    assert "SLO gate: PASS" in passed_log
    assert failed == 1, failed_log[-3000:]
    assert "admin login failed: 401" in failed_log and "SLO gate: FAIL" in failed_log
