"""Shapes are data; tick() is a pure function of the stages and the run time."""

from __future__ import annotations

import math
from argparse import Namespace
from types import SimpleNamespace

import pytest

from loadtests.shapes import (
    ProfileShape,
    Stage,
    spike,
    stage_index,
    stage_start,
    stages_from_options,
    steady,
    step_ramp,
    tick,
)


def test_steady_holds_its_users_until_the_run_time_and_then_stops():
    stages = steady(users=50, spawn_rate=10, duration=60)
    assert [tick(stages, t) for t in (0, 30, 59.9)] == [(50, 10)] * 3
    assert tick(stages, 60) is None


def test_steady_without_a_run_time_never_stops():
    assert tick(steady(5, 5), 10**9) == (5, 5)


def test_step_ramp_climbs_in_equal_steps_of_equal_length():
    stages = step_ramp(max_users=100, steps=4, duration=120)
    assert stages == tuple(Stage(30, users, 25) for users in (25, 50, 75, 100))
    assert [tick(stages, t)[0] for t in (0, 29.9, 30, 59.9, 60, 90, 119.9)] == [25, 25, 50, 50, 75, 100, 100]
    assert tick(stages, 120) is None


def test_step_ramp_rounds_uneven_steps_and_ends_at_the_maximum():
    assert [s.users for s in step_ramp(10, 3, 30)] == [3, 7, 10]


@pytest.mark.parametrize(("users", "steps", "duration"),
                         [(10, 0, 30), (2, 3, 30), (10, 2, math.inf), (10, 2, 0)])
def test_step_ramp_refuses_impossible_ramps(users, steps, duration):
    with pytest.raises(ValueError):
        step_ramp(users, steps, duration)


def test_spike_jumps_in_the_middle_fifth_and_recovers():
    stages = spike(users=10, duration=100, factor=4)
    assert [tick(stages, t) for t in (0, 39.9, 40, 59.9, 60, 99.9)] == [
        (10, 30), (10, 30), (40, 30), (40, 30), (10, 30), (10, 30)]
    assert tick(stages, 100) is None


@pytest.mark.parametrize(("factor", "duration"), [(1.0, 60), (0.5, 60), (4.0, math.inf)])
def test_spike_refuses_no_spike_or_no_run_time(factor, duration):
    with pytest.raises(ValueError):
        spike(10, duration, factor)


def test_stage_index_and_start_agree_with_tick():
    stages = step_ramp(30, 3, 30)
    assert [stage_index(stages, t) for t in (0, 10, 25, 30)] == [0, 1, 2, None]
    assert [stage_start(stages, i) for i in range(3)] == [0, 10, 20]


def options(**overrides):
    base = {"shape": "steady", "num_users": 20, "spawn_rate": 5, "run_time": 60, "steps": 4,
            "spike_factor": 3.0}
    return Namespace(**{**base, **overrides})


@pytest.mark.parametrize(("shape", "expected"), [
    ("steady", steady(20, 5, 60)),
    ("step", step_ramp(20, 4, 60)),
    ("spike", spike(20, 60, 3.0)),
])
def test_the_shape_option_picks_the_stages_from_users_and_run_time(shape, expected):
    assert stages_from_options(options(shape=shape)) == expected


def test_steady_defaults_to_one_user_and_no_end():
    assert stages_from_options(options(num_users=None, spawn_rate=None, run_time=None)) == steady(1, 1)


def test_an_unknown_shape_is_refused():
    with pytest.raises(ValueError, match="--shape"):
        stages_from_options(options(shape="sawtooth"))


def test_profile_shape_ticks_its_stages_at_the_runs_clock(monkeypatch):
    shape = ProfileShape()
    shape.runner = SimpleNamespace(environment=SimpleNamespace(parsed_options=options(shape="step")))
    monkeypatch.setattr(shape, "get_run_time", lambda: 16.0)
    assert shape.tick() == (10, 5)  # second of four 15 s steps to 20 users
    monkeypatch.setattr(shape, "get_run_time", lambda: 60.0)
    assert shape.tick() is None
