"""Turn measured steps into a capacity figure, replicas per stack, a Markdown report and a chart;
and ``make loadtest``'s summary (``loadtest_markdown``: the emails the writers' users got and
their event-to-email latency, or why that was not measured).

The arithmetic is pure and tested: ``cpu_used`` (cores a process tree used in a window, from
CPU-time samples), ``capacity_step`` (the fastest step within the SLO before the first that is
not) and ``replicas`` (pods for a target rate under an HPA CPU target).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from loadtests.emails import EmailResult, email_section  # the summary's email part lives with its data
from loadtests.stack import StackSizing

Sample = tuple[float, float]  # (wall-clock time, CPU seconds used so far)


@dataclass(frozen=True)
class Step:
    """A measured step: the Locust side (steps.json) plus the CPU the processes used."""

    index: int
    users: int
    rps: float
    p50: float
    p95: float
    p99: float
    requests: int
    failures: int
    violations: tuple[str, ...]
    server_cores: float
    locust_cores: float
    busiest_worker_cores: float = math.nan
    other_cores: float = math.nan  # everything else on the machine: the noise in the numbers

    @property
    def passed(self) -> bool:
        return not self.violations

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cores / self.rps if self.rps else math.nan


@dataclass(frozen=True)
class Replicas:
    stack: StackSizing
    per_pod_rps: float
    pods: int
    covered: bool


def _cpu_at(samples: Sequence[Sample], at: float) -> float:
    """Interpolate cumulative CPU seconds at wall-clock time ``at``."""
    if at <= samples[0][0]:
        return samples[0][1]
    for (t0, c0), (t1, c1) in pairwise(samples):
        if t0 <= at <= t1:
            return c0 + (c1 - c0) * (at - t0) / (t1 - t0) if t1 > t0 else c1
    return samples[-1][1]


def cpu_used(samples: Sequence[Sample], start: float, end: float) -> float:
    """Return the cores used on average between ``start`` and ``end`` (wall-clock seconds)."""
    if len(samples) < 2 or end <= start:
        return 0.0
    return (_cpu_at(samples, end) - _cpu_at(samples, start)) / (end - start)


def capacity_step(steps: Sequence[Step]) -> Step | None:
    """Return the fastest step within the SLO that comes before the first step outside it.

    Conservative on purpose: a later step that passes again after a failing one is noise on a
    shared machine, not capacity.
    """
    best = None
    for step in steps:
        if not step.passed:
            break
        if best is None or step.rps > best.rps:
            best = step
    return best


def replicas(target_rps: float, step: Step, stack: StackSizing) -> Replicas:
    """Pods needed for ``target_rps`` when the HPA holds each pod at its CPU target.

    A pod serves ``cpu_target * cpu_request / cpu_per_request`` requests per second at the
    utilisation the HPA steers to, with the CPU cost per request measured at the capacity step
    (where the SLO still held, so the rate it implies is one the service met).
    """
    cpu_per_request = step.server_cores / step.rps
    per_pod = stack.cpu_target * stack.cpu_request_cores / cpu_per_request
    pods = max(stack.min_replicas, math.ceil(target_rps / per_pod))
    return Replicas(stack, per_pod, pods, pods <= stack.max_replicas)


def requests_target(sized: Replicas) -> int:
    """The ``targetRequestsPerSecond`` to set: the per-pod rate at the HPA's CPU target, rounded down.

    The rate a pod sustains within the SLO (its CPU request over the CPU cost of a request, measured
    at the capacity step) times the same headroom the CPU target keeps: both metrics then steer to
    one operating point, and the rate, which needs no CPU averaging, acts first when load climbs.
    """
    return max(1, math.floor(sized.per_pod_rps))


def markdown(steps: Sequence[Step], best: Step | None, sizing: Sequence[Replicas], target_rps: float,
             machine: dict[str, str], setup: dict[str, str], limits: Any, chart: str) -> str:
    """Render the report."""
    lines = ["# Capacity report", "",
             "> Numbers are relative to the machine below: Locust and the service share its cores, and "
             "other work on it adds noise. Compare runs on the same machine; size production from the "
             "CPU cost per request, which carries over better than the absolute rate.", "",
             "## Machine", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in machine.items()], "",
             "## Setup", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in setup.items()],
             f"| SLO limits (dashboards/slo.yaml) | failure ratio ≤ {limits.max_failure_ratio:.2%}, "
             f"p95 ≤ {limits.p95_seconds * 1000:.0f} ms, p99 ≤ {limits.p99_seconds * 1000:.0f} ms |", "",
             "## Steps", "",
             "| step | users | req/s | p50 ms | p95 ms | p99 ms | failures | service CPU (cores) "
             "| busiest worker (cores) | CPU ms/request | Locust CPU (cores) | other work (cores) | SLO |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in steps:
        verdict = "pass" if s.passed else "FAIL: " + "; ".join(s.violations)
        lines.append(f"| {s.index + 1} | {s.users} | {s.rps:.1f} | {s.p50 * 1000:.0f} | {s.p95 * 1000:.0f} "
                     f"| {s.p99 * 1000:.0f} | {s.failure_ratio:.2%} | {s.server_cores:.2f} "
                     f"| {s.busiest_worker_cores:.2f} | {s.cpu_ms_per_request:.2f} | {s.locust_cores:.2f} "
                     f"| {s.other_cores:.2f} | {verdict} |")
    lines += ["", "A gunicorn worker is one Python process: with threads it still runs Python on about one "
              "core at a time (the GIL), and a keep-alive connection stays with the worker that accepted "
              "it. When the busiest worker nears one core, latency climbs even while the machine has "
              "idle CPU; compare it with the service total. *Other work* is the CPU every other process "
              "on the machine used during the step: when it is large, the service got less than the "
              "machine's cores and the rate is lower than the machine can do."]
    lines += ["", "## Result", ""]
    if best is None:
        lines += ["No step met the SLO: the capacity is below the first step. Start lower "
                  "(`CAPACITY_ARGS=\"--max-users N\"`) or look at the failures in `locust.html`."]
        return "\n".join([*lines, "", f"![rate, p95 and failures per step]({chart})", ""])
    lines += [f"Highest request rate within the SLO: **{best.rps:.1f} req/s** (step {best.index + 1}, "
              f"{best.users} users), with the service using {best.server_cores:.2f} cores: "
              f"**{best.cpu_ms_per_request:.2f} ms of CPU per request**, "
              f"{best.rps / best.server_cores:.0f} req/s per core."]
    if best is steps[-1]:
        lines += ["", "Every step met the SLO, so this is a lower bound: the ramp did not reach the limit. "
                  "Ramp higher (`CAPACITY_ARGS=\"--max-users N\"`)."]
    lines += ["", "## Replicas", "",
              f"For a target peak of **{target_rps:.0f} req/s** (`--target-rps`): a pod serves "
              "`HPA CPU target * CPU request / CPU per request` req/s at the utilisation the HPA steers "
              "to, so the HPA settles at "
              "`ceil(target / per-pod rate)` pods, at least `minReplicas`.", "",
              "| stack | CPU request | HPA CPU target | req/s per pod | pods needed | replicas (min..max) "
              "| maxReplicas covers it? | source | targetRequestsPerSecond: advised (set) |",
              "|---|---:|---:|---:|---:|---:|---|---|---:|"]
    for r in sizing:
        st = r.stack
        source = ", ".join(f"{k}: {v}" for k, v in st.sources.items())
        advised = requests_target(r)
        lines.append(f"| {st.name} | {st.cpu_request_cores * 1000:.0f}m | {st.cpu_target:.0%} "
                     f"| {r.per_pod_rps:.0f} | {r.pods} | {st.min_replicas}..{st.max_replicas} "
                     f"| {'yes' if r.covered else f'**no**: raise maxReplicas to {r.pods}'} | {source} "
                     f"| **{advised}** ({st.requests_target or 'off'}) |")
    lines += ["", "`targetRequestsPerSecond` (the HPA's per-pod request-rate target, served by "
              "prometheus-adapter) is the req/s per pod above, rounded down: the rate a pod sustains "
              "within the SLO times the headroom the CPU target keeps. CPU and rate then aim at the same "
              "point; the rate reacts first (no CPU averaging) and still scales when requests wait on "
              "the database rather than burn CPU. Set it in the stack's file when the two differ by more "
              "than a run's noise (repeat the run)."]
    return "\n".join([*lines, "", f"![rate, p95 and failures per step]({chart})", ""])


def chart(steps: Sequence[Step], best: Step | None, limits: Any, path: Path) -> None:
    """Draw rate, latency and failures per step into a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    import matplotlib.pyplot as plt

    labels = [f"{s.index + 1}\n{s.users}u" for s in steps]
    x = list(range(len(steps)))
    fig, (rate, latency, failures) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    rate.bar(x, [s.rps for s in steps], color=["tab:green" if s.passed else "tab:red" for s in steps])
    if best is not None:
        rate.axhline(best.rps, color="black", linestyle=":", label=f"capacity {best.rps:.0f} req/s")
        rate.legend(loc="upper left")
    rate.set_ylabel("req/s")
    rate.set_title("Capacity step ramp (green: within the SLO, red: outside)")
    latency.plot(x, [s.p95 * 1000 for s in steps], marker="o", label="p95")
    latency.plot(x, [s.p99 * 1000 for s in steps], marker="s", label="p99")
    latency.axhline(limits.p95_seconds * 1000, color="tab:blue", linestyle="--", label="p95 limit")
    latency.axhline(limits.p99_seconds * 1000, color="tab:orange", linestyle="--", label="p99 limit")
    latency.set_ylabel("latency (ms)")
    latency.set_yscale("log")
    latency.legend(loc="upper left")
    failures.plot(x, [s.failure_ratio * 100 for s in steps], marker="o", color="tab:red", label="failures")
    failures.axhline(limits.max_failure_ratio * 100, color="tab:red", linestyle="--", label="limit")
    failures.set_ylabel("failures (%)")
    failures.set_xticks(x, labels)
    failures.set_xlabel("step (users)")
    failures.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def loadtest_markdown(exit_code: int, email: EmailResult | None, not_measured: str = "") -> str:
    """``make loadtest``'s summary beside Locust's HTML report."""
    verdict = "pass" if exit_code == 0 else f"FAIL (exit code {exit_code})"
    return "\n".join(["# Load test", "", f"SLO gate: {verdict}; requests, latency and failures: "
                      "`loadtest.html`, `loadtest_stats.csv`.", "", *email_section(email, not_measured)])
