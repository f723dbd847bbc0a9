"""make bench: wrk's report is read correctly, and a short run produces every table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import service_missing

from loadtests.bench import wrk

SAMPLE = (Path(__file__).parent / "fixtures" / "wrk-latency.txt").read_text()


def test_wrk_report_is_parsed():
    result = wrk.parse(SAMPLE)
    assert result.rps == 1013.69 and result.requests == 1016 and result.errors == 0
    assert result.p50 == pytest.approx(0.00365) and result.p99 == pytest.approx(0.01097)


def test_failed_requests_are_counted():
    broken = SAMPLE.replace("Requests/sec:", "  Socket errors: connect 0, read 3, write 0, timeout 2\n"
                            "  Non-2xx or 3xx responses: 7\nRequests/sec:")
    assert wrk.parse(broken).errors == 12


def test_a_report_without_numbers_is_refused():
    with pytest.raises(AttributeError):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused")


@pytest.mark.slow
def test_short_run_prints_every_table():
    if not wrk.available():
        service_missing("wrk is not installed")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-m", "loadtests.bench.run", "--seconds", "1", "--rounds", "1",
                             "--only", "trivial,scrape"], capture_output=True, text=True, timeout=300,
                            env=env,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for row in ("(a) Flask alone", "(b) prometheus_flask_exporter", "(b') Lookout", "(c) Lookout, default",
                "(d) Lookout, 100%", "(e) Lookout, default sampling, no access line",
                "(c)/(b), goal ≥ 1.2: throughput", "(c)/(e), the access line", "(round by round: ",
                "| 500 | 2000 |"):
        assert row in out, row
