"""Load shapes as data: a shape is a tuple of stages, and ``tick`` is a pure function of it.

Usage:
    stages = step_ramp(max_users=100, steps=5, duration=150)
    tick(stages, run_time=42.0)          # -> (40, 40.0): users and spawn rate right now
    stage_index(stages, run_time=42.0)   # -> 1

``ProfileShape`` is the one LoadTestShape the locustfile exposes (Locust silently uses the first
shape class it finds, so there is exactly one); it builds its stages from the command line:
``--shape steady|step|spike`` with ``-u`` (users at the top of the profile), ``-r`` and ``-t``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from locust import LoadTestShape

SHAPES = ("steady", "step", "spike")


@dataclass(frozen=True)
class Stage:
    duration: float  # seconds; math.inf for "until the run time ends it"
    users: int
    spawn_rate: float  # users started or stopped per second on entering the stage


def tick(stages: Sequence[Stage], run_time: float) -> tuple[int, float] | None:
    """Return (users, spawn rate) at ``run_time`` seconds, or None when the shape is over."""
    index = stage_index(stages, run_time)
    if index is None:
        return None
    return stages[index].users, stages[index].spawn_rate


def stage_index(stages: Sequence[Stage], run_time: float) -> int | None:
    """Return the index of the stage running at ``run_time``, or None past the last one."""
    end = 0.0
    for index, stage in enumerate(stages):
        end += stage.duration
        if run_time < end:
            return index
    return None


def stage_start(stages: Sequence[Stage], index: int) -> float:
    """Return the run time at which stage ``index`` begins."""
    return sum(stage.duration for stage in stages[:index])


def steady(users: int, spawn_rate: float, duration: float = math.inf) -> tuple[Stage, ...]:
    """Hold ``users`` for ``duration`` seconds."""
    return (Stage(duration, users, spawn_rate),)


def step_ramp(max_users: int, steps: int, duration: float,
              spawn_rate: float | None = None) -> tuple[Stage, ...]:
    """Climb to ``max_users`` in ``steps`` equal steps that share ``duration``.

    Each step adds users quickly (within about a second unless ``spawn_rate`` says otherwise) and
    then holds them, so a step's latency is measured at a settled load: what capacity search and
    watching an autoscaler need.
    """
    if steps < 1 or max_users < steps:
        raise ValueError(f"a step ramp needs 1 <= steps <= users (got steps={steps}, users={max_users})")
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError("a step ramp needs a run time (-t)")
    increment = max_users / steps
    rate = spawn_rate or max(1.0, math.ceil(increment))
    return tuple(Stage(duration / steps, round(increment * (n + 1)), rate) for n in range(steps))


def spike(users: int, duration: float, factor: float = 4.0,
          spawn_rate: float | None = None) -> tuple[Stage, ...]:
    """Hold ``users``, jump to ``users * factor`` for the middle fifth of ``duration``, then recover."""
    if factor <= 1:
        raise ValueError(f"a spike needs a factor above 1 (got {factor})")
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError("a spike needs a run time (-t)")
    peak = math.ceil(users * factor)
    # A spike arrives at once: all extra users within a second, and they leave as fast.
    rate = spawn_rate or float(peak - users)
    return (
        Stage(duration * 0.4, users, rate),
        Stage(duration * 0.2, peak, rate),
        Stage(duration * 0.4, users, rate),
    )


def stages_from_options(options: Any) -> tuple[Stage, ...]:
    """Build the stages named by ``--shape`` from Locust's parsed options."""
    users = options.num_users or 1
    duration = float(options.run_time) if options.run_time else math.inf
    spawn_rate = options.spawn_rate
    if options.shape == "steady":
        return steady(users, spawn_rate or users, duration)
    if options.shape == "step":
        return step_ramp(users, options.steps, duration)
    if options.shape == "spike":
        return spike(users, duration, options.spike_factor)
    raise ValueError(f"--shape must be one of {', '.join(SHAPES)} (got {options.shape!r})")


class ProfileShape(LoadTestShape):
    """The shape chosen with ``--shape``; reads -u, -r and -t (use_common_options)."""

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self._stages: tuple[Stage, ...] | None = None

    @property
    def stages(self) -> tuple[Stage, ...]:
        if self._stages is None:
            assert self.runner is not None, "Locust sets runner before the first tick"
            self._stages = stages_from_options(self.runner.environment.parsed_options)
        return self._stages

    def tick(self) -> tuple[int, float] | None:
        return tick(self.stages, self.get_run_time())
