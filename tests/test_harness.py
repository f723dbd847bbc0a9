"""The process harness (loadtests/harness): what it starts it stops, group and all, and a test
session that leaves one of its processes running fails, naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.harness import PID_FILE, launch, outlived, stop, wait_until

CONFTEST = Path(__file__).with_name("conftest.py")
ROOT = CONFTEST.parents[1]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_stop_ends_the_process_and_what_it_left_in_its_group(tmp_path):
    """A leader that exits on SIGTERM leaving a child behind (a master whose worker hangs on)."""
    child = tmp_path / "child"
    process = launch(["sh", "-c", f"trap 'exit 0' TERM; sleep 300 & echo $! > {child}; wait"])
    pid = int(wait_until(lambda: child.exists() and child.read_text().strip(), "the child's pid"))
    assert alive(pid) and any(p == pid for p, _ in outlived())
    assert stop(process, timeout=10) == 0
    wait_until(lambda: not alive(pid), "the child to be killed", timeout=10)
    assert process.pid not in {p for p, _ in outlived()}


def test_stop_kills_what_outstays_the_bound():
    process = launch([sys.executable, "-c", "import signal, time\n"
                      "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
                      "time.sleep(300)"], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    assert stop(process, timeout=0.5) == -9


LEAKY_SUITE = """
import subprocess, sys
from loadtests.harness import launch

def test_leaves_a_process_running():
    launch(["sleep", "301"])

def test_starts_a_program_that_leaves_one_running():
    subprocess.run([sys.executable, "-c", "from loadtests.harness import launch; launch(['sleep', '302'])"],
                   check=True)

def test_stops_what_it_starts():
    from loadtests.harness import stop
    stop(launch(["sleep", "303"]))
"""


def run_suite(tmp_path: Path, tests: str) -> subprocess.CompletedProcess[str]:
    """Run ``tests`` as a session of their own under the suite's conftest.py."""
    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('lookout_conftest', {str(CONFTEST)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "pytest_sessionfinish = module.pytest_sessionfinish\n")
    (tmp_path / "test_sample.py").write_text(tests)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOOKOUT_REQUIRE_SERVICES": ""}
    env.pop(PID_FILE)  # the inner session records its own
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_a_session_that_leaves_a_process_running_fails_and_kills_it(tmp_path):
    result = run_suite(tmp_path, LEAKY_SUITE)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert "2 processes started by the tests outlived them (now killed)" in result.stdout, result.stdout
    assert "sleep 301  [started by test_sample.py::test_leaves_a_process_running (call)]" in result.stdout
    assert "sleep 302  [started by test_sample.py::test_starts_a_program_that" in result.stdout
    assert "sleep 303" not in result.stdout
    survivors = subprocess.run(["pgrep", "-f", "^sleep 30[123]$"], capture_output=True, text=True).stdout
    assert not [pid for pid in survivors.split() if alive(int(pid)) and _ours(int(pid), tmp_path)]


def _ours(pid: int, tmp_path: Path) -> bool:
    """Only this test's sleeps count (another suite on the machine might run the same command)."""
    try:
        return Path(f"/proc/{pid}/cwd").resolve() == tmp_path.resolve()
    except OSError:
        return False


def test_a_session_that_stops_what_it_starts_passes(tmp_path):
    result = run_suite(tmp_path, LEAKY_SUITE.split("def test_leaves")[0] + "def test_stops" +
                       LEAKY_SUITE.split("def test_stops")[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "outlived" not in result.stdout


@pytest.mark.parametrize("pid_file", [True, False])
def test_outlived_sees_only_this_sessions_processes(tmp_path, monkeypatch, pid_file):
    """A process of a nested session (its own record) is not this session's to report."""
    record = tmp_path / "pids"
    record.write_text("")
    if pid_file:
        monkeypatch.setenv(PID_FILE, str(record))
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)  # not through the harness
    try:
        assert other.pid not in {p for p, _ in outlived()}
    finally:
        other.kill()
        other.wait()
