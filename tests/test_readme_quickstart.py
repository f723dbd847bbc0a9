"""The README's quickstart, run as written: `make run`, then the second block in another shell.

The blocks are the fenced ``sh`` blocks that follow ``<!-- quickstart -->`` in README.md. The
first serves (``make run``); the rest run in order against it, with two changes a test needs:
the server gets a free port and a fresh SQLite file (``PORT``, ``DATABASE_URL``), and the
blocks' ``127.0.0.1:8000`` is rewritten to that port. Ctrl-C (SIGINT to the process group, as a
terminal sends it) must stop the server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import service_missing

from loadtests.harness import ROOT, free_port, launch, wait_until

README = ROOT / "README.md"
MARKER = "<!-- quickstart -->"
README_ADDRESS = "127.0.0.1:8000"


def quickstart_blocks(markdown: str) -> list[str]:
    """The ``sh`` blocks marked as the quickstart, in order."""
    return re.findall(rf"{re.escape(MARKER)}\n```sh\n(.*?)\n```", markdown, flags=re.DOTALL)


def test_the_quickstart_is_marked():
    blocks = quickstart_blocks(README.read_text())
    assert len(blocks) == 2
    assert blocks[0].split("#")[0].strip() == "make run"
    second = blocks[1]
    assert "ADMIN_PASSWORD=" in second and "make admin" in second and "make seed" in second
    # it logs in before it reads
    assert second.index("/api/v1/auth/token") < second.index("api/v1/users?")
    assert "Authorization: Bearer $TOKEN" in second.split("api/v1/users?")[1].splitlines()[0]


def test_the_extraction_sees_only_marked_blocks():
    text = f"```sh\nmake nothing\n```\n{MARKER}\n```sh\nmake run\n```\n\n{MARKER}\n```sh\na\nb\n```\n"
    assert quickstart_blocks(text) == ["make run", "a\nb"]


def wait_for_line(log: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    def seen() -> bool:
        if process.poll() is not None:
            pytest.fail(f"make run exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        return re.search(pattern, log.read_text(errors="replace")) is not None

    try:
        wait_until(seen, f"a line matching {pattern!r}", timeout, interval=0.2)
    except TimeoutError:
        pytest.fail(f"no line matching {pattern!r} after {timeout} s:\n{log.read_text(errors='replace')}")


@pytest.mark.slow
def test_the_quickstart_runs_as_written(tmp_path: Path):
    for tool in ("make", "curl"):
        if not shutil.which(tool):
            service_missing(f"{tool} is not installed (the quickstart needs it)")
    serve, *steps = quickstart_blocks(README.read_text())
    port = free_port()
    # A fresh terminal: none of the variables the blocks set, no enclosing make.
    env = {k: v for k, v in os.environ.items()
           if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "LOOKOUT_ENV", "ADMIN_EMAIL", "ADMIN_PASSWORD",
                        "N", "TOKEN", "LOOKOUT_USER_PASSWORD"}}
    env |= {"PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path / 'lookout.db'}"}
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        # Recorded by the harness, so the session fails if it outlives the test.
        server = launch(["bash", "-c", serve], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_line(log, rf"Lookout serving on http://127\.0\.0\.1:{port} \(Ctrl-C stops\)", server,
                      timeout=180)
        output = ""
        for step in steps:
            script = "set -euo pipefail\n" + step.replace(README_ADDRESS, f"127.0.0.1:{port}")
            result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                                    text=True, timeout=300, check=False)
            output += result.stdout
            assert result.returncode == 0, f"{step}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        assert "created admin admin@example.com" in output
        assert "seeded 25 users" in output
        listed = output[output.index('"items"'):]
        # JSON as the service writes it, compact or not
        assert re.search(r'"email": ?"admin@example\.com"', listed), listed
        assert re.search(r'"email": ?"demo-1@example\.com"', listed), listed
        assert re.search(r'"email": ?"ada@example\.com"', output), output  # the user created with the token
        assert (tmp_path / "lookout.db").exists()
        served = log.read_text(errors="replace")
        assert "Current configuration" not in served  # gunicorn's 6 KB settings dump stays out
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
            pytest.fail(f"Ctrl-C did not stop make run within 30 s:\n{log.read_text(errors='replace')}")
    assert "Shutting down: Master" in log.read_text(errors="replace")
