"""The kind e2e script's steps, run here: stand-in docker, kind, kubectl and Pulumi CLIs where a
cluster is needed, a real Lookout under gunicorn for the smoke test, the admin and the load test.

Prometheus and Grafana behind port-forwards are infra/delivery/cluster_checks.py's, tested against
real servers in test_cluster_checks.py; here the check step's forwards are replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import PASSWORD

from delivery.conftest import COMMIT, STANDIN, StandIn
from infra.delivery import e2e
from infra.delivery.pulumi_cli import PulumiStack
from infra.delivery.rollout import CanaryWatch
from loadtests.harness import ROOT

GOOD, FAULTY = "lookout:e2e-0123abc", "lookout:e2e-faulty-0123abc"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
RECORDER = """#!/usr/bin/env python3
import json, os, shutil, sys
from pathlib import Path
log = Path(os.environ["RECORDER_LOG"])
calls = json.loads(log.read_text()) if log.exists() else []
calls.append([Path(sys.argv[0]).name, *sys.argv[1:]])
log.write_text(json.dumps(calls))
if sys.argv[1:2] == ["cp"]:  # docker cp NODE:/usr/bin/kubectl DEST: the node image's kubectl
    shutil.copy(os.environ["NODE_KUBECTL"], sys.argv[3])
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a folder of its own (reports/e2e lands there), with stand-in docker and kind on PATH."""
    monkeypatch.chdir(tmp_path)
    bin_dir = tmp_path / "standin-bin"
    bin_dir.mkdir()
    for name in ("docker", "kind"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("RECORDER_LOG", str(tmp_path / "recorded.json"))
    monkeypatch.setenv("NODE_KUBECTL", str(STANDIN.parent / "kubectl"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the load step runs `python -m loadtests.run` from here
    return tmp_path


def recorded(workdir: Path) -> list[list[str]]:
    path = workdir / "recorded.json"
    return json.loads(path.read_text()) if path.exists() else []


def kubectl_calls(log: Path) -> list[list[str]]:
    return json.loads(log.read_text()) if log.exists() else []


@pytest.fixture
def cluster_env(workdir: Path, pulumi_standin: StandIn, kubectl_standin: Path, lookout_service: str,
                monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> StandIn:
    address = lookout_service.removeprefix("http://")
    monkeypatch.setenv("PULUMI_STANDIN_ADDRESSES", json.dumps({GOOD: address, FAULTY: address}))
    monkeypatch.setenv("PULUMI_STANDIN_ROLLOUT", "lookout")
    monkeypatch.setenv("GIT_COMMIT", COMMIT)
    return pulumi_standin


def test_cluster_pins_what_it_runs_by_digest_and_installs_metrics_server(workdir: Path, kubectl_standin: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KUBECTL")  # the node image's kubectl, copied out of the control plane
    github_path = workdir / "github-path"
    monkeypatch.setenv("GITHUB_PATH", str(github_path))
    e2e.main(["cluster", "--image", GOOD, "--faulty-image", FAULTY])
    calls = recorded(workdir)
    assert calls[0] == ["docker", "cp", "lookout-control-plane:/usr/bin/kubectl", "reports/e2e/bin/kubectl"]
    assert github_path.read_text().strip() == str((workdir / "reports" / "e2e" / "bin").resolve())
    run = next(c for c in calls if c[:2] == ["docker", "run"])
    assert DIGEST.search(run[-1]) and "cloud-provider-kind" in run[-1]
    assert ["kind", "load", "docker-image", GOOD, "--name", "lookout"] in calls
    assert ["kind", "load", "docker-image", FAULTY, "--name", "lookout"] in calls
    kubectl = kubectl_calls(kubectl_standin)
    assert ["apply", "-f", e2e.METRICS_SERVER_MANIFEST] in kubectl
    image = next(c for c in kubectl if c[2:4] == ["set", "image"])
    assert DIGEST.search(image[-1]) and image[-1].startswith("metrics-server=registry.k8s.io/metrics-server/")
    patch = next(c for c in kubectl if "patch" in c)
    assert json.loads(patch[-1])[0]["value"] == "--kubelet-insecure-tls"


def test_up_deploys_the_dev_stack_with_its_overrides_and_smoke_tests_it(cluster_env: StandIn):
    assert e2e.main(["up", "--image", GOOD]) == 0
    config = cluster_env.stack("dev")["config"]
    assert {k: config[k] for k in e2e.OVERRIDES} == e2e.OVERRIDES
    assert config["image"] == GOOD and len(config["secretKey"]) == 64
    assert len(config["bootstrapAdminPassword"]) >= 24  # the migration Job's first admin


def test_up_keeps_the_stacks_bootstrap_admin_password(cluster_env: StandIn):
    stack = PulumiStack("dev")
    stack.select(create=True)
    stack.set_config("bootstrapAdminPassword", PASSWORD, secret=True)
    assert e2e.main(["up", "--image", GOOD]) == 0
    assert cluster_env.stack("dev")["config"]["bootstrapAdminPassword"] == PASSWORD


@pytest.fixture
def deployed(cluster_env: StandIn) -> StandIn:
    stack = PulumiStack("dev")
    stack.select(create=True)
    stack.set_config("image", GOOD)
    stack.set_config("bootstrapAdminPassword", PASSWORD, secret=True)  # the migration Job's admin
    stack.up()
    return cluster_env


@pytest.fixture
def loki_asks() -> list[str]:
    """The trace ids the check step asked Loki for."""
    return []


@pytest.fixture
def no_forwards(monkeypatch: pytest.MonkeyPatch, loki_asks: list[str]) -> list[tuple[str, str]]:
    forwarded: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def forward(namespace: str, service: str, port: int) -> Iterator[str]:
        forwarded.append((namespace, service))
        yield f"http://{service}.invalid"

    monkeypatch.setattr(e2e, "port_forward", forward)
    monkeypatch.setattr(e2e.cluster_checks, "run", lambda prometheus, grafana, auth, **_: [])
    monkeypatch.setattr(e2e.cluster_checks, "check_datasources", lambda grafana, auth: [])
    monkeypatch.setattr(e2e.cluster_checks, "check_logs",
                        lambda loki, trace_id: loki_asks.append(trace_id) or [])
    return forwarded


@pytest.mark.slow
def test_check_creates_an_admin_loads_the_service_and_sees_the_hpa_scale(
        deployed: StandIn, no_forwards: list, loki_asks: list[str], lookout_service: str,
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("E2E_USERS", "2")
    monkeypatch.setenv("E2E_RUN_TIME", "25s")  # seeding pays production Argon2id hashes first
    monkeypatch.setenv("KUBECTL_STANDIN_HPA", json.dumps([1, 1, 2, 3]))
    # Locust logs in as the stack's bootstrap admin (start_lookout's), not as the smoke account.
    monkeypatch.delenv("LOOKOUT_SMOKE_EMAIL")
    monkeypatch.setenv("KUBECTL_STANDIN_HPA_RATE", json.dumps([None, "12500m", "31"]))
    monkeypatch.setattr(e2e.Replicas, "__init__", _fast_replicas)
    assert e2e.main(["check"]) == 0
    assert [s for _, s in no_forwards] == ["kps-prometheus", "grafana", "loki"]
    [trace_id] = loki_asks  # Loki is asked for the trace id of the request the step sent
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert Path("reports/e2e/loadtest_stats.csv").exists(), "Locust's report of the run through the LB"
    assert Path("reports/e2e/hpa-replicas.txt").read_text().split()[-1] == "3"
    assert "12.5" in Path("reports/e2e/hpa-request-rate.txt").read_text().split()


def _fast_replicas(self: e2e.Replicas, namespace: str, interval: float = 5.0) -> None:
    import threading

    self.namespace, self.interval, self.seen, self.minimum = namespace, 0.5, [], 0
    self.rates, self.rate_metric = [], ""
    self.stopped, self.thread = threading.Event(), threading.Thread(target=self._run, daemon=True)


def test_the_hpa_check_fails_when_nothing_scaled(workdir: Path, kubectl_standin: Path,
                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBECTL_STANDIN_HPA", json.dumps([1, 1, 1]))
    replicas = e2e.Replicas("lookout", interval=0.01)
    with replicas:
        pass
    assert "never scaled up" in (replicas.problem() or "")
    monkeypatch.setenv("KUBECTL_STANDIN_HPA", json.dumps([1, 2]))
    replicas = e2e.Replicas("lookout", interval=0.01)
    with replicas:
        replicas.read()
    assert replicas.problem() is None


def test_the_hpa_check_fails_when_the_request_rate_never_reaches_it(workdir: Path, kubectl_standin: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    """The HPA scales on the rate the adapter serves: scaling on CPU alone is not enough."""
    monkeypatch.setenv("KUBECTL_STANDIN_HPA", json.dumps([1, 2]))
    monkeypatch.setenv("KUBECTL_STANDIN_HPA_RATE", json.dumps([None]))
    replicas = e2e.Replicas("lookout", interval=0.01)
    with replicas:
        replicas.read()
    assert "never read http_server_requests_per_second" in (replicas.problem() or "")
    monkeypatch.setenv("KUBECTL_STANDIN_HPA_RATE", json.dumps([None, "12500m"]))
    replicas = e2e.Replicas("lookout", interval=0.01)
    with replicas:
        replicas.read()
    assert replicas.rates == [12.5] or 12.5 in replicas.rates
    assert replicas.problem() is None


def test_the_load_step_keeps_argon2_under_one_percent_of_the_traffic():
    command = e2e.locust_command("http://203.0.113.10")
    assert command[command.index("--think-time-scale") + 1] == "0.2"
    assert command[command.index("--target") + 1] == "http://203.0.113.10"


def test_canary_passes_when_the_faulty_image_is_aborted_and_rolled_back(deployed: StandIn,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBECTL_STANDIN_CANARY", json.dumps({FAULTY: "abort"}))
    assert e2e.canary(GOOD, FAULTY, watch=CanaryWatch(poll=0.01, timeout=5)) == 0
    assert deployed.stack("dev")["outputs"]["image"] == GOOD


def test_canary_fails_when_the_faulty_image_is_promoted(deployed: StandIn, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture):
    monkeypatch.setenv("KUBECTL_STANDIN_CANARY", json.dumps({FAULTY: "promote"}))
    assert e2e.canary(GOOD, FAULTY, watch=CanaryWatch(poll=0.01, timeout=5)) == 1
    out = capsys.readouterr().out
    assert "was not aborted and rolled back: deployed" in out and f"runs {FAULTY}" in out


def test_diagnostics_survive_missing_crds_and_collect_helm_and_pulumi_state(
        deployed: StandIn, kubectl_standin: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBECTL_STANDIN_NO_CRDS", "1")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no docker here: its file says so, the rest goes on
    monkeypatch.setenv("PULUMI", str(STANDIN))
    assert e2e.main(["diagnostics"]) == 0
    out = Path("reports/e2e/diagnostics")
    assert "doesn't have a resource type" in (out / "servicemonitors.yaml").read_text()
    assert "doesn't have a resource type" in (out / "rollouts.yaml").read_text()
    objects = (out / "objects.txt").read_text()
    assert "kubectl stand-in: get all,pvc,networkpolicy,hpa,pdb -A -o wide" in objects
    for name in ("monitoring-logs.txt", "database.yaml", "helm-releases.txt", "rollouts-controller-logs.txt"):
        assert (out / name).read_text().startswith("$ ")
    assert "No such file" in (out / "cloud-provider-kind.txt").read_text()
    assert json.loads((out / "pulumi-state.json").read_text())["version"] == 3
    assert "loadBalancerAddress" in (out / "pulumi-outputs.json").read_text()


def test_the_e2e_path_filter_covers_what_it_runs():
    """loadtests/ and the Makefile run in the e2e job: a change to them runs it."""
    from infra.delivery.changes import deployable

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e.yml").read_text())
    runs = [s["run"] for s in workflow["jobs"]["kind"]["steps"] if "run" in s]
    assert all(r.startswith("make ") for r in runs)
    ran = ["Makefile", "loadtests/run.py", "infra/delivery/e2e.py", ".ci/faulty/faulty.py",
           ".github/workflows/e2e.yml"]
    assert deployable(ran) == ran


@pytest.mark.slow
def test_the_faulty_release_fails_one_api_request_in_three_where_the_slis_count_it(tmp_path: Path):
    """What the canary step deploys: probes pass, a third of API requests are 500s in the app's metrics."""
    import requests
    from conftest import migrate

    from loadtests.harness import GunicornServer

    url = f"sqlite:///{tmp_path / 'lookout.db'}"
    migrate(url)
    env = {"DATABASE_URL": url, "PYTHONPATH": str(ROOT / ".ci" / "faulty")}
    with GunicornServer(env, target="faulty:app", ready_path="/readyz", metrics_port=True) as server:
        statuses = [requests.get(f"{server.url}/api/v1/users", timeout=10).status_code for _ in range(9)]
        # The other two answer as the app does to an anonymous read: 401, a 4xx no SLI counts.
        assert statuses.count(500) == 3 and statuses.count(401) == 6
        assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
        metrics = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
    errors = [line for line in metrics.splitlines()
              if line.startswith("http_server_requests_total{") and 'status="500"' in line]
    assert errors and float(errors[0].rsplit(" ", 1)[1]) == 3.0, errors
