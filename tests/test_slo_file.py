"""The SLO file loads, the load-test thresholds derive from it, and a broken one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboards import SLO_FILE, duration_seconds, load_slo


def variant(tmp_path: Path, old: str, new: str) -> Path:
    """Write a copy of the real SLO file with one edit."""
    text = SLO_FILE.read_text()
    assert old in text, old
    path = tmp_path / "slo.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_slo_file_loads():
    slo = load_slo()
    assert slo.availability_target == 0.999
    assert slo.loadtest.p99_seconds == slo.latency_threshold_seconds
    assert slo.loadtest.max_failure_ratio == pytest.approx(1 - slo.availability_target)
    assert [(a.long, a.short, a.burn_rate, a.severity) for a in slo.burn_rate_alerts] == [
        ("1h", "5m", 14.4, "page"), ("6h", "30m", 6, "page"),
        ("1d", "2h", 3, "ticket"), ("3d", "6h", 1, "ticket")]


def test_loadtest_thresholds_follow_the_objectives(tmp_path):
    stricter = load_slo(variant(tmp_path, "target: 0.999", "target: 0.9995"))
    assert stricter.loadtest.max_failure_ratio == 0.0005  # exact: no 0.000499999...
    slower = load_slo(variant(tmp_path, "threshold_seconds: 0.25", "threshold_seconds: 0.5"))
    assert slower.loadtest.p99_seconds == 0.5
    assert slower.loadtest.p95_seconds == load_slo().loadtest.p95_seconds


@pytest.mark.parametrize("old, new, message", [
    ("target: 0.999", "target: 99.9", "availability_target"),
    ("p95_seconds: 0.1", "p95_seconds: 0.1\n  p99_seconds: 0.3", "derive from the objectives"),
    ("p95_seconds: 0.1", "p95_seconds: 0.1\n  max_failure_ratio: 0.01", "derive from the objectives"),
    ("p95_seconds: 0.1", "p95_seconds: 0.5", "at most the latency threshold"),
    ("target: 0.99\n", "target: 0.95\n", "latency target of 0.99"),
    ("threshold_seconds: 0.5\n", "threshold_seconds: 0.1\n", "at least the latency threshold"),
    ("route: /api/v1/auth/token", "route: /livez", "must be an API route"),
    ("    threshold_seconds: 0.5\n", "    threshold_seconds: 0.5\n    target: 0.95\n", "login threshold"),
    ("{long: 1h, short: 5m", "{long: 5m, short: 1h", "short must be below long"),
    ("severity: page, for: 2m", "severity: urgent, for: 2m", "neither page nor ticket"),
    ("for: 2m}", "for: 2 minutes}", "not a Prometheus duration"),
])
def test_a_broken_slo_file_is_refused(tmp_path, old, new, message):
    with pytest.raises(ValueError, match=message):
        load_slo(variant(tmp_path, old, new))


@pytest.mark.parametrize("text, seconds", [("5m", 300), ("1h30m", 5400), ("3d", 259200), ("250ms", 0.25)])
def test_durations_parse_like_prometheus(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1.5h", "h", "5m ", "-5m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        duration_seconds(text)
