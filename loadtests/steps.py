"""Per-step statistics of a step ramp, for the capacity report (``--capacity-out FILE``).

Each request is filed under the stage of the shape it finished in, in a Locust ``RequestStats``
of its own (so percentiles are Locust's), skipping the first seconds of each step while users
are still arriving and logging in. At quit, every step is judged with the SLO gate's
``evaluate`` and written as JSON with its wall-clock window (the capacity driver lines that up
with the CPU time the server used).

Works with a local runner only: in distributed mode the master never sees single requests.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from locust.stats import RequestStats

from loadtests.gate import evaluate
from loadtests.shapes import Stage, stage_index, stage_start
from loadtests.slo import thresholds

SETTLE_SECONDS = 3.0  # ignored at the start of each step: spawning, logins, connection set-up


@dataclass
class StepResult:
    index: int
    users: int
    start: float  # wall clock (time.time()) of the measured window
    end: float
    requests: int
    failures: int
    rps: float
    p50: float  # seconds
    p95: float
    p99: float
    violations: list[str]

    @property
    def passed(self) -> bool:
        return not self.violations


class StepRecorder:
    """Collect requests per stage; ``results()`` judges each stage against the SLO limits."""

    def __init__(self, stages: tuple[Stage, ...], origin: float, settle: float = SETTLE_SECONDS) -> None:
        self.stages = stages
        self.origin = origin  # wall-clock time at run time 0
        self.settle = min(settle, min(s.duration for s in stages) / 3)
        self.stats = [RequestStats(use_response_times_cache=False) for _ in stages]

    def record(self, at: float, method: str, name: str, response_time: float, length: int,
               exception: Any) -> None:
        """File one request that finished at wall-clock time ``at``."""
        run_time = at - self.origin
        index = stage_index(self.stages, run_time)
        if index is None or run_time - stage_start(self.stages, index) < self.settle:
            return
        stats = self.stats[index]
        stats.log_request(method, name, round(response_time), length)
        if exception:
            stats.log_error(method, name, exception)

    def results(self) -> list[StepResult]:
        """Summarise and judge every stage."""
        limits = thresholds()
        results = []
        for index, (stage, stats) in enumerate(zip(self.stages, self.stats, strict=True)):
            start = self.origin + stage_start(self.stages, index) + self.settle
            window = stage.duration - self.settle
            total = stats.total
            results.append(StepResult(
                index=index, users=stage.users, start=start, end=start + window,
                requests=total.num_requests, failures=total.num_failures,
                rps=total.num_requests / window,
                p50=total.get_response_time_percentile(0.5) / 1000 if total.num_requests else 0.0,
                p95=total.get_response_time_percentile(0.95) / 1000 if total.num_requests else 0.0,
                p99=total.get_response_time_percentile(0.99) / 1000 if total.num_requests else 0.0,
                violations=[str(v) for v in evaluate(total, limits)],
            ))
        return results


def write_results(path: Path, results: list[StepResult], exceptions: int) -> None:
    """Write the steps as JSON for the capacity driver."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exceptions": exceptions, "steps": [asdict(r) for r in results]}, indent=2))


def install(environment: Any) -> None:
    """Record steps when ``--capacity-out`` is given (an ``init`` listener)."""
    options = environment.parsed_options
    if options is None or not getattr(options, "capacity_out", ""):
        return
    state: dict[str, StepRecorder] = {}

    def on_test_start(environment: Any, **_kwargs: Any) -> None:
        shape = environment.shape_class
        state["recorder"] = StepRecorder(shape.stages, time.time() - shape.get_run_time())

    def on_request(request_type: str, name: str, response_time: float, response_length: int,
                   exception: Any = None, **_kwargs: Any) -> None:
        if "recorder" in state:
            state["recorder"].record(time.time(), request_type, name, response_time, response_length,
                                     exception)

    def on_quitting(environment: Any, **_kwargs: Any) -> None:
        if "recorder" in state:
            exceptions = sum(e["count"] for e in environment.runner.exceptions.values())
            write_results(Path(options.capacity_out), state["recorder"].results(), exceptions)

    environment.events.test_start.add_listener(on_test_start)
    environment.events.request.add_listener(on_request)
    environment.events.quitting.add_listener(on_quitting)
