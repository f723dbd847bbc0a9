"""The SLO gate judged on synthetic stats: a good run passes, each kind of bad run fails."""

from __future__ import annotations

import logging
from argparse import Namespace
from types import SimpleNamespace

import pytest
from locust.env import Environment
from locust.stats import RequestStats

from dashboards import LoadTestThresholds, load_slo
from loadtests import gate, slo
from loadtests.gate import Violation, evaluate, slo_gate

LIMITS = LoadTestThresholds(max_failure_ratio=0.001, p95_seconds=0.1, p99_seconds=0.25)


def synthetic(times_ms: dict[int, int], failures: int = 0) -> RequestStats:
    """Locust stats holding ``count`` requests of each response time, ``failures`` of them failed."""
    stats = RequestStats()
    for response_time, count in times_ms.items():
        for _ in range(count):
            stats.log_request("GET", "/api/v1/users/[id]", response_time, 100)
    for _ in range(failures):
        stats.log_error("GET", "/api/v1/users/[id]", "expected 200, got 500")
    return stats


def metrics(violations: list[Violation]) -> list[str]:
    return [v.metric for v in violations]


def test_the_thresholds_are_the_slo_files():
    assert slo.thresholds() == load_slo().loadtest


def test_a_good_run_passes():
    stats = synthetic({5: 9000, 40: 900, 90: 90, 240: 10}, failures=9)  # 0.09% failed
    assert evaluate(stats.total, LIMITS) == []


@pytest.mark.parametrize(("times", "failures", "broken"), [
    ({5: 1000}, 2, ["failure ratio"]),                      # 0.2% failed, fast
    ({5: 90, 150: 10}, 0, ["p95"]),                         # 10% slow, but under the p99 limit
    ({5: 98, 400: 2}, 0, ["p99"]),                          # a slow tail only
    ({300: 100}, 50, ["failure ratio", "p95", "p99"]),      # everything wrong
])
def test_each_kind_of_bad_run_fails(times, failures, broken):
    assert metrics(evaluate(synthetic(times, failures).total, LIMITS)) == broken


LOGIN = "/api/v1/auth/token"
SPLIT = LoadTestThresholds(max_failure_ratio=0.001, p95_seconds=0.1, p99_seconds=0.25,
                           login_p99_seconds=0.5, login_route=LOGIN)


def with_logins(stats: RequestStats, times_ms: dict[int, int]) -> RequestStats:
    for response_time, count in times_ms.items():
        for _ in range(count):
            stats.log_request("POST", LOGIN, response_time, 100)
    return stats


def judged(stats: RequestStats, limits: LoadTestThresholds = SPLIT) -> list[str]:
    latency, logins = gate.split_logins(stats, limits.login_route)
    return metrics(evaluate(stats.total, limits, latency=latency, logins=logins))


def test_a_login_burst_is_held_to_the_login_objective_not_the_api_latency():
    """Logins at 300 ms (Argon2id queueing in a burst) and fast reads: within both objectives. The
    whole run's p95 and p99, which the gate held to the API latency before, would fail it."""
    stats = with_logins(synthetic({5: 1000}), {300: 400})
    assert judged(stats) == []
    assert metrics(evaluate(stats.total, SPLIT)) == ["p95", "p99"]  # the old, unsplit judgement


def test_slow_logins_or_slow_reads_still_fail_their_own_limit():
    assert judged(with_logins(synthetic({5: 1000}), {300: 90, 700: 10})) == ["login p99"]
    assert judged(with_logins(synthetic({5: 97, 400: 3}), {300: 100})) == ["p99"]
    latency, logins = gate.split_logins(with_logins(synthetic({5: 10}), {300: 5}), LOGIN)
    assert (latency.num_requests, logins.num_requests) == (10, 5)


def test_the_slo_files_gate_holds_logins_to_the_login_objective():
    limits, slo_ = load_slo().loadtest, load_slo()
    assert (limits.login_route, limits.login_p99_seconds) == (slo_.login_route, slo_.login_threshold_seconds)
    assert limits.p99_seconds == slo_.latency_threshold_seconds < limits.login_p99_seconds


def test_a_run_without_requests_fails():
    assert metrics(evaluate(RequestStats().total, LIMITS)) == ["requests"]


def test_persona_exceptions_and_listener_errors_fail_an_otherwise_good_run():
    good = synthetic({5: 100}).total
    assert metrics(evaluate(good, LIMITS, exceptions=3)) == ["exceptions"]
    assert metrics(evaluate(good, LIMITS, listener_failed=True)) == ["listener"]


def test_messages_name_the_threshold_and_by_how_much():
    p95, p99 = evaluate(synthetic({5: 90, 300: 10}).total, LIMITS)
    assert str(p95) == "p95 latency 0.300s exceeds the SLO limit 0.100s by 0.200s (+200%)"
    assert str(p99) == "p99 latency 0.300s exceeds the SLO limit 0.250s by 0.050s (+20%)"
    (ratio,) = evaluate(synthetic({5: 1000}, failures=20).total, LIMITS)
    assert str(ratio) == ("failure ratio 2.00% (20 of 1000 requests) exceeds the SLO limit 0.10% "
                          "by 1.90 percentage points")


@pytest.fixture
def environment(monkeypatch):
    """A Locust environment whose runner (only its exceptions are read) starts no greenlets."""
    monkeypatch.setattr(gate.locust_log, "unhandled_greenlet_exception", False)
    env = Environment(parsed_options=Namespace(capacity_out=""))
    env.runner = SimpleNamespace(exceptions={})
    return env


def test_the_listener_sets_exit_code_0_for_a_good_run_despite_failures(environment, caplog):
    caplog.set_level(logging.INFO)
    environment.stats = synthetic({5: 10_000}, failures=5)
    slo_gate(environment)
    assert environment.process_exit_code == 0  # Locust alone would exit 1 on any failure
    assert "SLO gate: PASS" in caplog.text


def test_the_listener_sets_exit_code_1_and_says_why(environment, caplog):
    environment.stats = synthetic({5: 90, 300: 10})
    slo_gate(environment)
    assert environment.process_exit_code == 1
    assert "SLO gate: FAIL: p95 latency 0.300s exceeds the SLO limit 0.100s" in caplog.text


def test_the_listener_fails_a_run_whose_personas_raised(environment):
    environment.stats = synthetic({5: 100})
    environment.runner.exceptions = {1: {"count": 2, "msg": "KeyError", "traceback": "", "nodes": set()}}
    slo_gate(environment)
    assert environment.process_exit_code == 1


def test_the_listener_leaves_capacity_runs_to_the_per_step_report(environment):
    environment.parsed_options.capacity_out = "steps.json"
    environment.stats = synthetic({900: 100})
    slo_gate(environment)
    assert environment.process_exit_code is None


def test_workers_leave_the_verdict_to_the_master(environment, monkeypatch):
    class Worker:  # stands in for locust's WorkerRunner, which needs a master to be built
        exceptions: dict = {}

    monkeypatch.setattr(gate, "WorkerRunner", Worker)
    environment.runner = Worker()
    environment.stats = synthetic({900: 100})
    slo_gate(environment)
    assert environment.process_exit_code is None
