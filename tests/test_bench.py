"""make bench: wrk's report is read correctly, rounds alternate and ratios are paired, and a short
run produces every table."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import service_missing

from loadtests.bench import instructions, run, wrk

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
                "(c)/(b): throughput", "goal ≥ 1.2", "(c)/(e), the access line", "(round by round: ",
                "| 500 | 2000 |"):
        assert row in out, row


def _result(rps: float, cpu_per_request: float = 0.001) -> wrk.Result:
    return wrk.Result(rps=rps, p50=0.001, p99=0.01, errors=0, requests=1000,
                      server_cpu=cpu_per_request * 1000)


def _setup(name: str, *rps: float) -> run.Setup:
    setup = run.Setup(name, {})
    setup.results = [_result(r, 1 / r) for r in rps]
    return setup


def test_ratios_are_taken_within_each_round():
    # The second setup is 1.1x the first in every round, while the machine's speed halves in the
    # middle: the ratio of the medians would say 1.0-ish noise, the paired ratio says 1.1.
    base = _setup("base", 1000, 1000, 500, 500, 500)
    better = _setup("better", 1100, 1100, 550, 550, 550)
    throughput, efficiency = run.ratios(better, base)
    assert throughput.rounds == pytest.approx((1.1,) * 5)
    assert throughput.median == pytest.approx(1.1) and efficiency.median == pytest.approx(1.1)
    assert throughput.by_round() == "1.10, 1.10, 1.10, 1.10, 1.10"


@pytest.mark.parametrize(("rounds", "expected"), [
    ((1.25, 1.3, 1.22, 1.4), "met"),
    ((1.25, 1.3, 1.05, 1.0, 1.22), "unclear"),  # median above the goal, lower quartile below
    ((1.05, 1.1, 1.3, 1.08), "not met"),
])
def test_a_goal_is_met_only_when_most_rounds_clear_it(rounds, expected):
    assert run.verdict(run.Ratio(rounds), 1.2) == f"goal ≥ 1.2 {expected}" + (
        " (median above, a quarter of rounds below)" if expected == "unclear" else "")


def test_rounds_alternate_order_and_servers_start_once(monkeypatch):
    started, measured = [], []

    class FakeServer:
        def __init__(self, env, **kwargs):
            self.url, self.pid = f"http://127.0.0.1/{kwargs['target']}", 0
            started.append(kwargs["target"])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    def fake_run(url, seconds, server_pid=None, warmup=1, headers=()):
        assert headers == ()  # GET /: no token
        if server_pid is not None:  # the warm-up passes no pid
            measured.append(url.rsplit("/", 2)[-2])
        return _result(1000)

    monkeypatch.setattr(run, "GunicornServer", FakeServer)
    monkeypatch.setattr(run.wrk, "run", fake_run)
    monkeypatch.setattr(run, "wait_until_idle", lambda servers: None)
    setups = [run.Setup(name, {}, target=name) for name in "ABC"]
    run.measure(setups, "sqlite://", seconds=1, rounds=3, cores=run.Cores())
    assert started == ["A", "B", "C"]
    assert measured == list("ABC" "CBA" "ABC")
    assert [len(s.results) for s in setups] == [3, 3, 3]


def test_the_users_endpoint_is_measured_with_the_admins_token(monkeypatch):
    servers, sent = [], []

    class FakeServer:
        def __init__(self, env, **kwargs):
            self.url, self.pid = "http://127.0.0.1:1", 0
            servers.append((env, kwargs["ready_path"]))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    def fake_run(url, seconds, server_pid=None, warmup=1, headers=()):
        sent.append(headers)
        return _result(1000)

    monkeypatch.setattr(run, "GunicornServer", FakeServer)
    monkeypatch.setattr(run.wrk, "run", fake_run)
    monkeypatch.setattr(run, "wait_until_idle", lambda servers: None)
    monkeypatch.setattr(run, "admin_token", lambda url: "the-token")
    run.measure([run.Setup("users", {}, run.USERS_PATH)], "sqlite://", seconds=1, rounds=2, cores=run.Cores())
    assert sent == [("Authorization: Bearer the-token",)] * 3  # warm-up and two rounds
    [(env, ready_path)] = servers
    assert ready_path == "/readyz"  # the list itself answers 401 to an anonymous poll
    assert int(env["RATE_LIMIT_READS"].split()[0]) >= 10**6


def test_servers_get_one_core_and_wrk_the_others(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: None, raising=False)
    cores = run.Cores.split()
    assert cores.server == {0} and cores.load == {1, 2}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert run.Cores.split() == run.Cores()  # one core: nothing to split


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores and sched_setaffinity")
def test_on_cores_moves_the_calling_thread_and_what_it_starts_then_restores():
    before = os.sched_getaffinity(0)
    target = frozenset({min(before)})
    with run.on_cores(target):
        assert os.sched_getaffinity(0) == target
        child = subprocess.run(["python3", "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                               capture_output=True, text=True, check=True).stdout
        assert child.strip() == str(sorted(target))
    assert os.sched_getaffinity(0) == before


def test_waiting_for_idle_servers_ends_when_their_cpu_stops_growing(monkeypatch):
    readings = iter([1.0, 1.2, 1.4, 1.401, 9.0])  # busy, busy, then idle
    monkeypatch.setattr(run.wrk, "process_tree_cpu", lambda pid: next(readings))
    monkeypatch.setattr(run, "IDLE_WINDOW", 0.0)
    server = type("S", (), {"pid": 1})()
    run.wait_until_idle([server])
    assert next(readings) == 9.0  # stopped at the first idle window, did not read on


def test_waiting_for_idle_servers_is_bounded(monkeypatch):
    busy = itertools.count()
    monkeypatch.setattr(run.wrk, "process_tree_cpu", lambda pid: float(next(busy)))  # 1 s per reading
    monkeypatch.setattr(run, "IDLE_WINDOW", 0.0)
    monkeypatch.setattr(run, "IDLE_TIMEOUT", 0.05)
    server = type("S", (), {"pid": 1})()
    run.wait_until_idle([server])  # returns instead of waiting for ever


def test_table_compares_each_setup_with_the_first_round_by_round():
    base = _setup("base", 1000, 500)
    slower = _setup("slower", 800, 400)  # 0.8x in both rounds, at 1.25x the CPU per request
    table = run.table([base, slower])
    assert "| base | 1000 | 10.0 | 1500 | 1.00 | 1.00 |" in table
    assert "| slower | 800 | 10.0 | 1875 | 0.80 | 1.25 |" in table


VALGRIND_SUMMARY = """==4711== Cachegrind, a high-precision tracing profiler
==4711== Command: python -m loadtests.bench.instructions bare / 10
==4711==
==4711== I refs:        4,829,291,583
"""


def test_valgrind_instruction_count_is_parsed():
    assert instructions.parse(VALGRIND_SUMMARY) == 4_829_291_583


def test_valgrind_output_without_a_count_is_refused():
    with pytest.raises(ValueError, match="no instruction count"):
        instructions.parse("==4711== error: cannot execute binary file")


@pytest.mark.slow
def test_instruction_counts_tell_the_apps_apart_and_subtract_start_up():
    """Two real counts: bare Flask and (b). Start-up (hundreds of millions of instructions)
    cancels, so a request counts in the hundreds of thousands, and (b)'s instrumentation shows."""
    if not instructions.available():
        service_missing("valgrind is not installed")
    bare = instructions.count("bare", "bare", "/", {}, 30)
    common = instructions.count("common", "common", "/", {}, 30)
    assert 50_000 < bare.per_request < 5_000_000, bare
    assert common.per_request > 1.5 * bare.per_request, (bare, common)


def test_the_instruction_report_weighs_lookouts_sampling_and_pairs_the_right_rows(monkeypatch):
    """Counting at 10% is a lottery (which requests the random trace ids sample), so Lookout's
    default-sampling rows are a dropped and a sampled count weighed by the ratio. The report's
    plumbing, with valgrind's counts stood in (real counts are tested above)."""
    def count(name: str, app: str, path: str, env: dict[str, str], requests: int) -> instructions.Count:
        if app == "anchor":
            assert "BENCH_AS" not in env
            return instructions.Count(name, 10_000_000.0 if path == run.USERS_PATH else 2_000_000.0)
        if app != "lookout":
            return instructions.Count(name, {"bare": 400_000.0, "common": 1_500_000.0}[app])
        base = 600_000.0 if path == "/" else 8_000_000.0
        if "CACHE_URL" in env:  # a hit costs less than a miss
            base = 1_000_000.0 if env.get("BENCH_ROTATE") == "1" else 500_000.0
        if path.startswith("/api/v1/users"):  # the users API answers only with a token
            assert env["BENCH_AS"] in (("user", "admin") if "{" in path else ("admin",)), (path, env)
        if env.get("OTEL_SDK_DISABLED") == "true" or env.get("TELEMETRY_ENABLED") == "false":
            return instructions.Count(name, base)
        sampled = env["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"
        return instructions.Count(name, base + 600_000 + (1_000_000 if sampled else 0))

    monkeypatch.setattr(instructions, "count", count)
    monkeypatch.setenv("BENCH_REDIS_URL", "redis://unused")
    report = run.instruction_counts("postgresql://unused", 10)
    assert "| (c) Lookout, default sampling | 1.300 |" in report  # 1.2 dropped, 2.2 sampled, 10%
    assert "| users endpoint (admin list page), telemetry on, default sampling | 8.700 |" in report
    assert "| GET /api/v1/users/{id} as a regular user (public profile), default sampling | 8.700 |" in report
    assert "- (c)/(b): 1.154" in report and "- (c) with tracing off/(b): 2.500" in report
    assert "- users endpoint on/off: 0.920" in report
    assert "sampling a request adds (millions): GET / 1.000, users endpoint 1.000" in report
    # The anchor (10 and 2 million) against Lookout (8.7 on both), and the cache's hit and miss.
    assert "- Lookout/anchor, list page: 0.870 (goal ≤ 1: met; stretch ≤ 0.7: not met)" in report
    assert "- Lookout/anchor, one user: 4.350 (goal ≤ 1: not met; stretch ≤ 0.7: not met)" in report
    assert "- cache hit/miss, one user: 0.706" in report  # 1.2 against 1.7 million


def test_the_users_endpoints_are_counted_on_mariadb_beside_postgresql(monkeypatch):
    """With a MariaDB/MySQL database the list and one user are counted on it too, and each set
    against PostgreSQL's count of the same request."""
    def count(name: str, app: str, path: str, env: dict[str, str], requests: int) -> instructions.Count:
        if app != "lookout":
            return instructions.Count(name, 1_000_000.0)
        if path.startswith("/api/v1/users"):
            assert env["BENCH_AS"] in ("user", "admin"), (path, env)
        on_mysql = env.get("DATABASE_URL", "").startswith("mysql")
        return instructions.Count(name, 10_000_000.0 if on_mysql else 8_000_000.0)

    monkeypatch.setattr(instructions, "count", count)
    monkeypatch.delenv("BENCH_REDIS_URL", raising=False)
    monkeypatch.delenv("TEST_REDIS_URL", raising=False)
    report = run.instruction_counts("postgresql://unused", 10, "mysql://unused")
    assert "| MariaDB/MySQL: users endpoint (admin list page), default sampling | 10.000 |" in report
    assert "| MariaDB/MySQL: GET /api/v1/users/{id} as a regular user, default sampling | 10.000 |" in report
    assert "- MariaDB/PostgreSQL, list page: 0.800" in report
    assert "- MariaDB/PostgreSQL, one user: 0.800" in report
    alone = run.instruction_counts(None, 10, "mysql://unused")  # counted, nothing to set it against
    assert "MariaDB/MySQL: users endpoint" in alone and "MariaDB/PostgreSQL" not in alone


def test_the_users_endpoint_is_measured_on_mariadb_beside_postgresql(monkeypatch):
    """The MariaDB setup is the same server settings on the other database, in the same rounds."""
    urls = []

    class FakeServer:
        def __init__(self, env, **kwargs):
            self.url, self.pid = f"http://127.0.0.1/{len(urls)}/", 0
            urls.append(env["DATABASE_URL"])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(run, "GunicornServer", FakeServer)
    monkeypatch.setattr(run.wrk, "run",
                        lambda url, seconds, server_pid=None, warmup=1, headers=(): _result(1000))
    monkeypatch.setattr(run, "wait_until_idle", lambda servers: None)
    monkeypatch.setattr(run, "admin_token", lambda url: "the-token")
    sink = SimpleNamespace(url="http://127.0.0.1:9")  # only its address is passed on
    report = run.users(sink, "postgresql://pg", seconds=1, rounds=2, cores=run.Cores(),
                       mysql_url="mysql://my")
    assert urls == ["postgresql://pg"] * 3 + ["mysql://my"]
    assert "on MariaDB/MySQL" in report and "- MariaDB/PostgreSQL, telemetry on: throughput" in report


def test_the_anchor_answers_the_list_and_one_user(app, make_user):
    """The tutorial's API reads Lookout's table: the same rows, the full record's fields."""
    from loadtests.bench import anchor

    users = [make_user() for _ in range(3)]
    client = anchor.create_app(app.config["DATABASE_URL"]).test_client()
    page = client.get("/api/v1/users?per_page=2").get_json()
    assert [item["id"] for item in page["items"]] == [users[0].id, users[1].id]
    assert page["_meta"]["total_items"] == 3 and page["_links"]["next"]
    one = client.get(f"/api/v1/users/{users[2].id}").get_json()
    assert set(one) == {"id", "name", "email", "role", "created_by", "created_at", "updated_at"}
    assert client.get("/api/v1/users/999999").status_code == 404


def test_a_request_that_fails_is_not_counted(tmp_path):
    """The counted requests must be the ones meant: a 404 path stops the run."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-m", "loadtests.bench.instructions", "bare", "/nowhere", "2"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0 and "answered 404" in result.stderr


@pytest.mark.parametrize("caller, path, status", [("user", run.PROFILE_PATH, None),
                                                  ("admin", run.USERS_PATH, None),
                                                  ("", run.USERS_PATH, "answered 401")])
def test_the_users_api_is_counted_with_a_token(app, make_user, caller, path, status):
    """BENCH_AS logs the counted requests in; without it the users API answers 401 and the run stops."""
    from app.models import Role

    make_user(Role.ADMIN)
    make_user()
    make_user()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "LOOKOUT_ENV": "testing",
           "DATABASE_URL": app.config["DATABASE_URL"], "BENCH_AS": caller}
    result = subprocess.run([sys.executable, "-m", "loadtests.bench.instructions", "lookout", path, "2"],
                            capture_output=True, text=True, timeout=120, env=env)
    if status is None:
        assert result.returncode == 0, result.stderr[-2000:]
    else:
        assert result.returncode != 0 and status in result.stderr
