"""Stopping a load test: run_locust bounds the wait for Locust after Ctrl-C or SIGTERM.

Locust stands in here as a small process whose signal handling each test chooses, because the
case that matters (a Ctrl-C that Locust swallows in one of its background greenlets) cannot be
made to happen on demand in real Locust. Each test runs run_locust in a process of its own
session, signals it as a terminal or CI would, and checks how long the stop took, the exit code,
and that the stand-in is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from loadtests.harness import ROOT, launch, stop, wait_until

pytestmark = pytest.mark.slow

# The stand-in: writes its pid (whole, by rename) once its handlers are set, then sleeps until a
# handler exits it. "swallows": the first SIGINT is lost (as in Locust's stats greenlets), the
# second ends the run with its reports (exit 0). "deaf": ignores SIGINT and SIGTERM.
# "terminates": exits 7 on SIGTERM.
STAND_IN = r"""
import os, signal, sys, time
from pathlib import Path
mode, out = sys.argv[1], Path(sys.argv[2])
interrupts = []
def on_int(*_):
    interrupts.append(time.monotonic())
    if mode == "swallows" and len(interrupts) == 2:
        (out / "reports").write_text("written")
        sys.exit(0)
signal.signal(signal.SIGINT, on_int if mode == "swallows" else signal.SIG_IGN)
signal.signal(signal.SIGTERM, (lambda *_: sys.exit(7)) if mode == "terminates" else signal.SIG_IGN)
(out / "pid.new").write_text(str(os.getpid()))
os.replace(out / "pid.new", out / "pid")
while True:
    time.sleep(0.05)
"""

# The driver marks the moment run_locust starts its bounded wait after a stop (the first wait
# with a timeout), so that a test can send a second Ctrl-C then and not sooner.
DRIVER = """
import subprocess, sys
from pathlib import Path
from loadtests.run import run_locust
mode, out, ask_again, kill = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
wait = subprocess.Popen.wait
def marked_wait(self, timeout=None):
    if timeout is not None:
        Path(out, "stopping").touch()
    return wait(self, timeout)
subprocess.Popen.wait = marked_wait
command = [sys.executable, "-c", {stand_in!r}, mode, out]
sys.exit(run_locust(command, {{}}, ask_again_after=ask_again, kill_after=kill))
"""


class Run:
    """run_locust in a session of its own, with the stand-in in the given mode."""

    def __init__(self, tmp_path: Path, mode: str, ask_again: float, kill: float) -> None:
        driver = DRIVER.format(stand_in=STAND_IN)
        self.process = launch(
            [sys.executable, "-c", driver, mode, str(tmp_path), str(ask_again), str(kill)],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)

        def started() -> bool:
            assert self.process.poll() is None, self.process.communicate()[1]
            return (tmp_path / "pid").exists()

        wait_until(started, "the stand-in to start")
        # Held as a psutil.Process: it knows its start time, so a pid used again by then is not it.
        self.stand_in = psutil.Process(int((tmp_path / "pid").read_text()))
        self.stopping = tmp_path / "stopping"

    def interrupt(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: both get it

    def wait(self, timeout: float) -> tuple[int, float, str]:
        started = time.monotonic()
        _, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, time.monotonic() - started, stderr

    def stop(self) -> None:
        if self.stand_in.is_running():
            self.stand_in.kill()
        stop(self.process, timeout=1)


@pytest.fixture
def start(tmp_path):
    runs: list[Run] = []

    def start(mode: str, ask_again: float = 1, kill: float = 3) -> Run:
        runs.append(Run(tmp_path, mode, ask_again, kill))
        return runs[-1]

    yield start
    for run in runs:
        run.stop()


def gone(process: psutil.Process) -> bool:
    return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE


def test_a_swallowed_ctrl_c_is_asked_again_and_the_reports_get_written(start, tmp_path):
    run = start("swallows", ask_again=1, kill=10)
    run.interrupt()
    code, seconds, stderr = run.wait(timeout=15)
    assert code == 0 and 1 <= seconds < 5, (code, seconds, stderr)
    assert "asking again" in stderr
    assert (tmp_path / "reports").read_text() == "written"


def test_a_locust_that_will_not_stop_is_killed_in_bounded_time(start):
    run = start("deaf", ask_again=1, kill=3)
    run.interrupt()
    code, seconds, stderr = run.wait(timeout=15)
    assert code == 128 + signal.SIGKILL and 3 <= seconds < 6, (code, seconds, stderr)
    assert "did not stop within 3s; killing it" in stderr
    assert gone(run.stand_in)


def test_a_second_ctrl_c_stops_it_at_once(start):
    run = start("deaf", ask_again=20, kill=30)
    run.interrupt()
    wait_until(run.stopping.exists, "run_locust to wait for the stop")
    run.interrupt()
    code, seconds, stderr = run.wait(timeout=15)
    assert code == 128 + signal.SIGKILL and seconds < 3, (code, seconds, stderr)
    assert "stopping Locust now" in stderr
    assert gone(run.stand_in)


def test_sigterm_is_passed_on_and_its_exit_code_kept(start):
    run = start("terminates", ask_again=20, kill=30)
    os.kill(run.process.pid, signal.SIGTERM)  # CI cancelling the job signals the runner only
    code, seconds, stderr = run.wait(timeout=15)
    assert code == 7 and seconds < 3, (code, seconds, stderr)
    assert gone(run.stand_in)
