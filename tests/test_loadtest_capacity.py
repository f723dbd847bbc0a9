"""Capacity arithmetic, per-step recording, stack config reading and the report, without a server."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from dashboards import LoadTestThresholds
from infra.config import ConfigError
from infra.stack_config import stack_values
from loadtests.report import Step, capacity_step, chart, cpu_used, markdown, replicas, requests_target
from loadtests.shapes import step_ramp
from loadtests.stack import StackSizing, read_stacks
from loadtests.steps import StepRecorder

LIMITS = LoadTestThresholds(max_failure_ratio=0.001, p95_seconds=0.1, p99_seconds=0.25)


def step(index: int, rps: float, passed: bool = True, cores: float = 1.0) -> Step:
    return Step(index=index, users=10 * (index + 1), rps=rps, p50=0.005, p95=0.05 if passed else 0.3, p99=0.1,
                requests=int(rps * 10), failures=0, violations=() if passed else ("p95 latency ...",),
                server_cores=cores, locust_cores=0.1, busiest_worker_cores=cores / 2)


def test_cpu_used_interpolates_cumulative_cpu_between_samples():
    samples = [(100.0, 10.0), (101.0, 10.5), (102.0, 11.5), (103.0, 12.5)]
    assert cpu_used(samples, 101.0, 103.0) == pytest.approx(1.0)
    assert cpu_used(samples, 100.5, 101.5) == pytest.approx(0.75)  # 0.25 + 0.5 over one second
    assert cpu_used(samples[:1], 100.0, 101.0) == 0.0


def test_capacity_is_the_fastest_step_before_the_first_failure():
    steps = [step(0, 100), step(1, 200), step(2, 190), step(3, 300, passed=False), step(4, 320)]
    assert capacity_step(steps).index == 1  # step 4 passing again after a failure is noise
    assert capacity_step([step(0, 50, passed=False), step(1, 80)]) is None


def test_replicas_follow_cpu_per_request_and_the_hpa_target():
    measured = step(0, rps=500, cores=1.0)  # 2 ms CPU per request
    stack = StackSizing("prod", min_replicas=2, max_replicas=10, cpu_request_cores=0.25, cpu_target=0.7)
    sized = replicas(1000, measured, stack)
    assert sized.per_pod_rps == pytest.approx(87.5)  # 0.7 * 0.25 cores / 0.002 s
    assert (sized.pods, sized.covered) == (12, False)  # ceil(1000 / 87.5)
    assert replicas(100, measured, stack).pods == 2  # never below minReplicas
    assert replicas(500, measured, replace(stack, max_replicas=6)).covered


def test_replicas_grow_with_the_cpu_cost_of_a_request():
    stack = StackSizing("prod", 1, 10, cpu_request_cores=1.0, cpu_target=0.5)
    cheap, dear = step(0, rps=500, cores=0.5), step(0, rps=250, cores=0.5)  # 1 ms and 2 ms per request
    assert (replicas(1000, cheap, stack).pods, replicas(1000, dear, stack).pods) == (2, 4)


PROJECT = """name: lookout
runtime: python
config:
  minReplicas: {type: integer, default: 2, description: lower bound}
  maxReplicas: {type: integer, default: 8, description: upper bound}
  cpuRequest: {type: string, default: 200m, description: CPU request}
  targetCpuUtilization: {type: integer, default: 70, description: HPA target}
  targetRequestsPerSecond: {type: integer, default: 0, description: HPA rate target}
"""


def test_stacks_merge_defaults_with_overrides_and_say_where_each_came_from(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text(PROJECT)
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  lookout:maxReplicas: 3\n  lookout:minReplicas: 1\n")
    (tmp_path / "Pulumi.prod.yaml").write_text("config:\n  lookout:targetCpuUtilization: 60\n")
    dev, prod = read_stacks(tmp_path)
    assert (dev.name, dev.min_replicas, dev.max_replicas, dev.cpu_request_cores) == ("dev", 1, 3, 0.2)
    assert dev.sources["max_replicas"] == "Pulumi.dev.yaml:maxReplicas"
    assert dev.sources["cpu_target"] == "Pulumi.yaml:targetCpuUtilization"
    assert (prod.min_replicas, prod.max_replicas, prod.cpu_target) == (2, 8, 0.6)
    assert prod.sources["cpu_target"] == "Pulumi.prod.yaml:targetCpuUtilization"
    assert (dev.requests_target, dev.sources["requests_target"]) == (0, "Pulumi.yaml:targetRequestsPerSecond")


def test_the_repo_stacks_are_read_as_pulumi_would(tmp_path):
    stacks = {s.name: s for s in read_stacks()}
    assert set(stacks) == {"dev", "staging", "prod"}
    for name, stack in stacks.items():
        values = stack_values(name, fake_secrets=True)
        assert (stack.min_replicas, stack.max_replicas) == (values["minReplicas"], values["maxReplicas"])


def test_an_undeclared_key_or_a_bad_quantity_is_refused(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text(PROJECT)
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  lookout:maxReplica: 3\n")
    with pytest.raises(Exception, match="maxReplica"):
        read_stacks(tmp_path)
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  lookout:cpuRequest: 250 m\n")
    with pytest.raises(ConfigError, match="cpuRequest"):
        read_stacks(tmp_path)


def test_without_stack_files_there_is_nothing_to_size(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_stacks(tmp_path)


def test_the_recorder_files_requests_per_step_after_the_settle_time():
    stages = step_ramp(max_users=20, steps=2, duration=20)  # two 10 s steps
    recorder = StepRecorder(stages, origin=1000.0, settle=2.0)
    recorder.record(1001.0, "GET", "/a", 500, 10, None)  # settling: ignored
    for n in range(100):
        recorder.record(1003.0 + n * 0.05, "GET", "/a", 5, 10, None)  # step 1, fast
        recorder.record(1013.0 + n * 0.05, "GET", "/a", 300, 10, "boom" if n < 5 else None)  # step 2
    recorder.record(1021.0, "GET", "/a", 5, 10, None)  # after the shape: ignored
    first, second = recorder.results()
    assert (first.requests, first.failures, first.rps, first.p95) == (100, 0, 12.5, 0.005)
    assert first.passed and first.users == 10 and first.start == 1002.0 and first.end == 1010.0
    assert (second.requests, second.failures) == (100, 5)
    assert not second.passed
    assert [v.split(" ")[0] for v in second.violations] == ["failure", "p95", "p99"]


def test_the_report_states_machine_steps_result_and_replicas(tmp_path):
    steps = [step(0, 100), step(1, 200), step(2, 210, passed=False)]
    best = capacity_step(steps)
    stack = StackSizing("dev", 1, 3, 0.25, 0.7, {"max_replicas": "Pulumi.dev.yaml:maxReplicas"})
    text = markdown(steps, best, [replicas(500, best, stack)], 500, {"CPU": "Test CPU, 2 logical cores"},
                    {"service": "gunicorn"}, LIMITS, "capacity.png")
    assert "| CPU | Test CPU, 2 logical cores |" in text
    assert "relative to the machine" in text
    assert "**200.0 req/s** (step 2, 20 users)" in text
    assert "| dev | 250m | 70% | 35 | 15 | 1..3 | **no**: raise maxReplicas to 15 |" in text
    assert text.split("\n| dev |")[1].split("\n")[0].endswith("| **35** (off) |")
    assert "`targetRequestsPerSecond`" in text
    assert "FAIL: p95 latency" in text
    assert math.isnan(replace(best, rps=0).cpu_ms_per_request)


def test_the_advised_requests_target_is_the_per_pod_rate_at_the_cpu_target():
    measured = step(0, 200, cores=0.5)  # 2.5 ms of CPU per request
    stack = StackSizing("prod", 2, 10, 0.25, 0.7)
    sized = replicas(1000, measured, stack)
    assert sized.per_pod_rps == pytest.approx(70)  # 0.7 x 0.25 cores / 2.5 ms
    assert requests_target(sized) == 70
    slower = replicas(1000, step(0, 200, cores=1.5), stack)  # 7.5 ms: 23.3 req/s
    assert requests_target(slower) == 23
    assert requests_target(replicas(1, step(0, 1, cores=1.0), stack)) == 1  # never 0 (off)


def test_the_report_says_when_nothing_met_the_slo():
    text = markdown([step(0, 100, passed=False)], None, [], 500, {}, {}, LIMITS, "capacity.png")
    assert "No step met the SLO" in text and "## Replicas" not in text


def test_the_chart_is_a_png(tmp_path):
    steps = [step(0, 100), step(1, 200, passed=False)]
    chart(steps, steps[0], LIMITS, tmp_path / "capacity.png")
    assert (tmp_path / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
