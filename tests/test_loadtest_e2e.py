"""Locust really runs: the gate fails a failing or slow service, passes the healthy app, and
``make loadtest`` / ``make capacity`` start and stop their own service.

Every run is headless, on 127.0.0.1, a few seconds long with a handful of users (so a few hundred
requests at most), and stops what it started. The app runs with cheap password hashing here so
the few Argon2id requests of a short run do not decide its p99 on a shared CI machine; make
loadtest itself keeps the production cost.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from broken_servers import FailingReadsProxy, FailingServer, RecordingProxy, SlowProxy
from conftest import PASSWORD

from app.models import Role
from loadtests.harness import GunicornServer, LocalService, launch, outlived, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHEAP_HASHING = {"PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "8"}
SHORT_RUN = ["-u", "8", "-r", "8", "-t", "5s", "--seed-users", "5", "--think-time-scale", "0.2"]
ADMIN = {"LOOKOUT_LOADTEST_ADMIN_EMAIL": "admin@example.com", "LOOKOUT_LOADTEST_ADMIN_PASSWORD": PASSWORD}


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return {**env, **CHEAP_HASHING, **extra}


def run(module: str, *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def gate_lines(done: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line for line in (done.stdout + done.stderr).splitlines() if "SLO gate" in line)


def test_the_gate_fails_a_service_that_answers_5xx(tmp_path):
    """Reads of single users fail with 503 (set-up gets through): the failure ratio fails the run."""
    with LocalService(tmp_path / "service", environ()) as service, FailingReadsProxy(service.url) as url:
        done = run("loadtests.run", "--target", url, "--reports", str(tmp_path), *SHORT_RUN,
                   env=environ(LOOKOUT_LOADTEST_ADMIN_EMAIL=service.admin_email,
                               LOOKOUT_LOADTEST_ADMIN_PASSWORD=service.admin_password))
    assert done.returncode == 1, done.stderr[-3000:]
    assert "SLO gate: FAIL: failure ratio" in gate_lines(done)
    assert "exceptions" not in gate_lines(done)  # the personas ran: the answers failed, not set-up
    assert (tmp_path / "loadtest.html").exists()


def test_the_gate_fails_a_service_that_cannot_be_set_up(tmp_path):
    """Every answer a 503, the admin's login too: set-up fails, and so does the run."""
    with FailingServer() as url:
        done = run("loadtests.run", "--target", url, "--reports", str(tmp_path), *SHORT_RUN,
                   env=environ(**ADMIN))
    assert done.returncode == 1, done.stderr[-3000:]
    assert "SLO gate: FAIL" in gate_lines(done) and "admin login failed: 503" in done.stderr


def test_the_gate_fails_a_slow_service_on_latency(tmp_path):
    with LocalService(tmp_path / "service", environ()) as service, SlowProxy(service.url, delay=0.3) as url:
        done = run("loadtests.run", "--target", url, "--reports", str(tmp_path), *SHORT_RUN,
                   env=environ(LOOKOUT_LOADTEST_ADMIN_EMAIL=service.admin_email,
                               LOOKOUT_LOADTEST_ADMIN_PASSWORD=service.admin_password))
    lines = gate_lines(done)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "FAIL: p95 latency" in lines and "FAIL: p99 latency" in lines
    assert "FAIL: failure ratio" not in lines  # slow, but every answer was right


def test_the_gate_passes_the_healthy_app(app, make_user, tmp_path):
    """Every persona runs against a real gunicorn, through a proxy that sees every request's headers."""
    make_user(Role.ADMIN, email="admin@example.com")
    env = {"DATABASE_URL": app.config["DATABASE_URL"], **CHEAP_HASHING}
    with GunicornServer(env, workers=2, ready_path="/readyz") as server:
        proxy = RecordingProxy(server.url)
        with proxy as url:
            done = run("loadtests.run", "--target", url, "--reports", str(tmp_path), *SHORT_RUN,
                       env=environ(**ADMIN))
    seen = list(proxy.requests)
    assert done.returncode == 0, gate_lines(done) + done.stderr[-3000:]
    assert "SLO gate: PASS" in gate_lines(done)
    for persona_request in ("POST     /api/v1/auth/token", "GET      /api/v1/users/[unknown id]",
                            "GET      /api/v1/users/[id]", "GET      /api/v1/users?page=[n]&per_page=20",
                            "GET      /api/v1/users?page=[n]&per_page=100"):
        assert persona_request in done.stderr  # writers, readers, the directory and the admin all ran
    # Readers read their own record: at /users/me where the service has it, by id where not.
    assert re.search(r"GET +/api/v1/users/(me|\[own id\])", done.stderr)
    users = [(method, path, token) for method, path, token in seen if path.startswith("/api/v1/users")]
    assert len(users) > 50
    assert [f"{method} {path}" for method, path, token in users if not token] == []  # all authenticated


def test_make_loadtest_runs_its_own_service_and_writes_reports(tmp_path):
    """The run's life cycle: its own service started, reports written, the service stopped.

    Whether the gate passes a healthy app is the test above's question. Here a latency verdict
    from a few seconds on a loaded machine (170 requests: p99 is the second slowest) is not
    asserted, but the gate must have judged, and every answer must have been right.
    """
    done = run("loadtests.run", "--reports", str(tmp_path), *SHORT_RUN, env=environ())
    lines = gate_lines(done)
    assert "SLO gate: PASS" in lines or "SLO gate: FAIL" in lines, done.stderr[-3000:]
    failures = [line for line in lines.splitlines() if "FAIL:" in line]
    assert all(re.search(r"FAIL: p\d\d latency", line) for line in failures), lines + done.stderr[-3000:]
    assert done.returncode == (1 if failures else 0), lines + done.stderr[-3000:]
    assert (tmp_path / "loadtest.html").stat().st_size > 0
    assert "Aggregated" in (tmp_path / "loadtest_stats.csv").read_text()
    pid = int(re.search(r"gunicorn pid (\d+)", done.stdout).group(1))
    # The harness recorded it with its start time: a pid used again since is not it.
    left = [what for running, what in outlived() if running == pid]
    if left:
        os.kill(pid, signal.SIGKILL)  # clean up what the run failed to stop, then fail
        pytest.fail(f"make loadtest left gunicorn {pid} running: {left}")


def test_make_loadtest_fails_when_the_service_cannot_start(tmp_path):
    done = run("loadtests.run", "--reports", str(tmp_path), *SHORT_RUN,
               env=environ(DATABASE_URL="postgresql://postgres@127.0.0.1:9/nothing"))
    assert done.returncode != 0
    assert "flask db upgrade failed" in done.stderr


def locust_requests(service_log: Path) -> int:
    """API requests the service has logged (its access lines; they reach the file in batches)."""
    if not service_log.exists():
        return 0
    lines = service_log.read_text().splitlines()
    return sum('"logger":"lookout.access"' in line and '"route":"/api/' in line for line in lines)


def test_ctrl_c_stops_locust_and_the_service(tmp_path):
    log = tmp_path / "run.log"
    with log.open("w") as out:
        process = launch([sys.executable, "-m", "loadtests.run", "--reports", str(tmp_path),
                          "-u", "4", "-r", "4", "-t", "60s", "--seed-users", "2"],
                         cwd=ROOT, env=environ(), stdout=out, stderr=subprocess.STDOUT)
    gunicorn = None
    try:
        def service_started() -> re.Match[str] | None:
            assert process.poll() is None, log.read_text()
            return re.search(r"gunicorn pid (\d+)", log.read_text())

        gunicorn = psutil.Process(int(wait_until(service_started, "the service to start").group(1)))
        wait_until(lambda: locust_requests(tmp_path / "service" / "server.log"), "Locust's first requests")
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 40 s after Ctrl-C:\n{log.read_text()[-3000:]}")
        assert not gunicorn.is_running(), log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if gunicorn is not None and gunicorn.is_running():  # only if the run above failed to stop it
            gunicorn.terminate()
            gunicorn.wait(15)


def test_make_capacity_writes_the_report_and_chart(tmp_path):
    infra = tmp_path / "infra"  # the repo's project file, a stack of the test's own
    infra.mkdir()
    shutil.copy(ROOT / "infra" / "Pulumi.yaml", infra / "Pulumi.yaml")
    (infra / "Pulumi.dev.yaml").write_text("config:\n  lookout:maxReplicas: 2\n  lookout:cpuRequest: 100m\n")
    done = run("loadtests.capacity", "--reports", str(tmp_path), "--infra", str(infra), "--steps", "2",
               "--step-seconds", "4", "--max-users", "6", "--think-time-scale", "0.3", "--target-rps", "50",
               env=environ())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = (tmp_path / "capacity.md").read_text()
    assert re.search(r"^\| 1 \| 3 \| [\d.]+ \|", report, re.M) and re.search(r"^\| 2 \| 6 \|", report, re.M)
    assert "logical cores" in report and "relative to the machine" in report
    assert re.search(r"^\| dev \| 100m \| 70% \|", report, re.M)
    assert (tmp_path / "capacity.png").read_bytes()[:4] == b"\x89PNG"
