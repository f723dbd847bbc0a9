"""The smoke test passes a real Lookout and fails a broken, outdated or leaky one."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery.conftest import COMMIT, start_lookout
from infra.delivery.smoke import commits_match, main, normalise, smoke


def test_a_real_service_passes_with_its_commit(lookout_service: str):
    report = smoke(lookout_service, COMMIT[:7], wait=10)
    assert report.ok, report.text()
    assert [c.name for c in report.checks] == [
        "ready", "liveness", "build", "openapi", "log in", "list users", "unknown user is a 404 problem",
        "metrics stay off the public port", "request id echoed"]
    assert "| ✅ | build |" in report.markdown()


@pytest.mark.parametrize(("credentials", "detail"), [
    (None, "no account to read with: set LOOKOUT_SMOKE_EMAIL and LOOKOUT_SMOKE_PASSWORD"),
    (("admin@example.com", "not-the-password"), "as admin@example.com: answered 401"),
])
def test_reads_without_a_valid_account_fail(lookout_service: str, monkeypatch: pytest.MonkeyPatch,
                                            credentials: tuple[str, str] | None, detail: str):
    monkeypatch.delenv("LOOKOUT_SMOKE_EMAIL")
    report = smoke(lookout_service, COMMIT, wait=10, credentials=credentials)
    assert not report.ok
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert "log in" in failed and failed["log in"].startswith(detail)


def test_the_old_build_still_serving_fails(lookout_service: str):
    report = smoke(lookout_service, "fedcba9876543210", wait=10)
    assert not report.ok
    assert [c.name for c in report.checks if not c.ok] == ["build"]


def test_a_service_answering_503_fails_at_readiness(failing_service: str):
    report = smoke(failing_service, None, wait=1)
    assert not report.ok and [c.name for c in report.checks] == ["ready"]
    assert "did not answer 200" in report.checks[0].detail and "503" in report.checks[0].detail


def test_nothing_listening_fails(tmp_path: Path):
    from loadtests.harness import free_port

    report = smoke(f"127.0.0.1:{free_port()}", None, wait=1)
    assert not report.ok and "ConnectionError" in report.checks[0].detail


@pytest.mark.slow
def test_metrics_on_the_public_port_fail(tmp_path: Path):
    server = start_lookout(tmp_path, metrics_port=False)
    try:
        report = smoke(server.url, None, wait=10)
    finally:
        server.stop()
    assert [c.name for c in report.checks if not c.ok] == ["metrics stay off the public port"]


def test_the_command_exits_by_the_verdict_and_writes_the_job_summary(
        lookout_service: str, failing_service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main([lookout_service, "--expect-commit", COMMIT, "--wait", "5"]) == 0
    assert main([failing_service, "--wait", "1"]) == 1
    text = summary.read_text()
    assert "passed" in text and "FAILED" in text


@pytest.mark.parametrize("expected, actual, match", [
    ("0123456", COMMIT, True), (COMMIT, "0123456", True), (COMMIT, COMMIT, True),
    ("012345", COMMIT, False),  # too short to mean one commit
    ("1123456", COMMIT, False), ("unknown", "unknown", False), ("", COMMIT, False),
])
def test_commits_match_short_and_full_shas(expected: str, actual: str, match: bool):
    assert commits_match(expected, actual) is match


@pytest.mark.parametrize("given, url", [
    ("203.0.113.7", "http://203.0.113.7"), ("lb.example.com/", "http://lb.example.com"),
    ("https://staging.example.com", "https://staging.example.com")])
def test_a_bare_load_balancer_address_becomes_a_url(given: str, url: str):
    assert normalise(given) == url
