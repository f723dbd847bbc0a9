"""The job-summary table of a load test agrees with the SLO gate; the required check's verdict."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from infra.delivery.loadtest_summary import main, markdown, read_stats
from infra.delivery.verdict import failures
from loadtests.gate import evaluate
from loadtests.harness import ROOT
from loadtests.slo import thresholds

FIXTURE = ROOT / "tests" / "fixtures" / "locust_stats.csv"  # a real `make loadtest` run, 10 users


def slow_copy(tmp_path: Path, p95_ms: int, failures_: int = 0) -> Path:
    """The fixture with the aggregated p95/p99 and failures changed."""
    rows = list(csv.DictReader(FIXTURE.open()))
    total = rows[-1]
    total["95%"], total["99%"], total["Failure Count"] = str(p95_ms), str(p95_ms * 2), str(failures_)
    path = tmp_path / "stats.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_run_within_the_slo_is_a_green_table():
    rows = read_stats(FIXTURE)
    assert rows[-1].name == "Aggregated" and rows[-1].num_requests == 97
    text = markdown(rows)
    assert text.startswith("### Load test: ✅ within the SLO")
    assert "| **all requests** | 97 | 0 (0.00%) |" in text
    assert "`GET /api/v1/users/[id]`" in text


def test_a_slow_run_is_red_with_the_gates_own_words(tmp_path: Path):
    rows = read_stats(slow_copy(tmp_path, p95_ms=300))
    text = markdown(rows, "Staging")
    assert text.startswith("### Staging: ❌ SLO broken: p95 latency 0.300s exceeds the SLO limit")
    verdict = text.split("SLO broken: ")[1].split("\n")[0]
    assert [str(v) for v in evaluate(rows[-1], thresholds())] == verdict.split("; ")


def test_a_slow_login_is_red_like_the_gate_says(tmp_path: Path):
    """The gate holds logins to a p99 of their own; the summary's verdict must not disagree."""
    rows = list(csv.DictReader(FIXTURE.open()))
    login = next(row for row in rows if row["Name"] == thresholds().login_route)
    login["99%"] = str(thresholds().login_p99_seconds * 1000 + 200)
    path = tmp_path / "stats.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = markdown(read_stats(path))
    assert text.startswith("### Load test: ❌ SLO broken: login p99 latency"), text.splitlines()[0]


def test_failures_over_the_budget_are_red(tmp_path: Path):
    text = markdown(read_stats(slow_copy(tmp_path, p95_ms=20, failures_=5)))
    assert "failure ratio 5.15%" in text and "5 (5.15%) ❌" in text


def test_the_command_appends_to_the_job_summary_and_fails_only_without_a_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    slow = str(slow_copy(tmp_path, p95_ms=300))
    assert main([slow, "--title", "Nightly"]) == 0, "the verdict is the load test's exit code, not this"
    assert "### Nightly: ❌" in summary.read_text()
    assert main([str(tmp_path / "missing.csv")]) == 1
    (tmp_path / "other.csv").write_text("Type,Name\nGET,/x\n")
    assert main([str(tmp_path / "other.csv")]) == 1


def test_the_summary_carries_the_load_tests_email_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from loadtests.emails import EmailResult
    from loadtests.report import loadtest_markdown

    stats = tmp_path / "loadtest_stats.csv"
    stats.write_bytes(FIXTURE.read_bytes())
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    result = EmailResult(users_created=12, emails=11, count=30, p50=0.4, p95=1.2, p99=2.5,
                         within_threshold=0.99, threshold_seconds=60.0, waited_seconds=3.0)
    (tmp_path / "loadtest.md").write_text(loadtest_markdown(0, result))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main([str(stats)]) == 0
    text = summary.read_text()
    table, _, emails = text.partition("#### Event-to-email latency")
    assert table.startswith("### Load test: ✅") and "| **all requests** | 97 |" in table
    assert "| their welcome emails received | 11 (**1 missing**) |" in emails
    assert "| p50 / p95 / p99 | 0.40 s / 1.20 s / 2.50 s |" in emails
    (tmp_path / "loadtest.md").write_text(loadtest_markdown(0, None, "no broker configured."))
    assert main([str(stats)]) == 0
    not_measured = "#### Event-to-email latency\n\nNot measured: no broker configured.\n\n"
    assert summary.read_text().endswith(not_measured)
    (tmp_path / "loadtest.md").unlink()
    assert main([str(stats)]) == 0  # a report without the section (an older run): the table alone
    assert summary.read_text().count("Event-to-email") == 2


@pytest.mark.parametrize("needs, failed", [
    ({"lint": {"result": "success"}, "test": {"result": "success"}}, []),
    ({"lint": {"result": "success"}, "e2e": {"result": "skipped"}}, []),
    ({"lint": {"result": "failure"}, "test": {"result": "success"}}, ["lint: failure"]),
    ({"test": {"result": "cancelled"}}, ["test: cancelled"]),
    ({}, ["no jobs were given: the verdict needs the needs context"]),
])
def test_the_verdict_fails_on_any_failed_or_cancelled_job(needs: dict, failed: list[str]):
    assert failures(needs) == failed
