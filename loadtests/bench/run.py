"""``make bench``: throughput and p99 of each setup, and their ratios, measured in one run.

Usage:
    python -m loadtests.bench.run [--seconds 3] [--rounds 10] [--requests 100] [--no-pin]
                                  [--only trivial,anchor,users,workers,models,scrape,instructions]

Reads BENCH_DATABASE_URL (else TEST_DATABASE_URL): a PostgreSQL server on which a throwaway
database is created for the users-endpoint parts; without one those parts are skipped.
BENCH_MYSQL_URL (else TEST_MYSQL_URL): a MariaDB/MySQL server, the same throwaway database and
users on it; the users endpoint is then measured and counted on it beside PostgreSQL.
BENCH_REDIS_URL (else TEST_REDIS_URL): the Redis of the read-cache comparison (skipped without).
Every server is gunicorn on 127.0.0.1 with the same settings (one worker, 8 threads unless
the part compares worker classes or process models).

How noise is kept out of the ratios (the machines this runs on are shared): every setup of a
part is started once and stays up; each round measures every setup for a few seconds, back to
back, in alternating order (ABC, CBA, ...), after waiting for the servers to go idle (a batch
of spans left to export would otherwise land on the next setup's turn). A ratio is taken
within each round, between measurements seconds apart, and the median of those per-round
ratios is reported with their interquartile range. Where the machine has two or more cores,
the servers run on one core and wrk and this process on the others, so the load generator
does not take turns with the server it measures (``--no-pin`` to leave scheduling alone; the
process-model part, whose point is a second core, is never pinned).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field

from app.platform.tracing import DEFAULT_SAMPLE_RATIO
from loadtests.bench import instructions, scrape, wrk
from loadtests.bench.sink import Sink
from loadtests.harness import PRODUCTION_SECRETS, GunicornServer

IDLE_CPU_SECONDS = 0.005  # a server that used less than this in IDLE_WINDOW is idle
IDLE_WINDOW = 0.25
IDLE_TIMEOUT = 8.0  # past the span processor's 5 s export schedule
USERS_PATH = "/api/v1/users?per_page=20"  # every users-endpoint part measures this page
PROFILE_PATH = "/api/v1/users/{other}"  # another user's public profile (instructions.py)
ONE_USER_PATH = "/api/v1/users/2"  # a seeded regular user, read by the admin (wrk)
ROTATING_PATH = "/api/v1/users/{id}"  # a different user each request: every cache read misses
ANCHOR = "loadtests.bench.anchor:create_app()"
BENCH_ADMIN = "bench-admin@example.com"


@dataclass
class Setup:
    name: str
    env: dict[str, str]
    path: str = "/"
    target: str = "app.wsgi:app"
    worker_class: str = "gthread"
    workers: int = 1
    threads: int = 8
    results: list[wrk.Result] = field(default_factory=list)

    def median(self) -> wrk.Result:
        by_rps = sorted(self.results, key=lambda r: r.rps)
        return by_rps[len(by_rps) // 2]

    def p99(self) -> float:
        return statistics.median(r.p99 for r in self.results)

    def cpu_per_request(self) -> float:
        return statistics.median(r.cpu_per_request for r in self.results)


@dataclass(frozen=True)
class Cores:
    """Where the servers run and where wrk runs; None: wherever the scheduler puts them."""

    server: frozenset[int] | None = None
    load: frozenset[int] | None = None

    @classmethod
    def split(cls) -> Cores:
        """One core for the server (one worker uses one core at most), the rest for wrk."""
        if not hasattr(os, "sched_setaffinity"):
            return cls()
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls()
        return cls(frozenset(cpus[:1]), frozenset(cpus[1:]))

    def describe(self) -> str:
        if self.server is None:
            return "not pinned to cores"
        return (f"servers pinned to core {','.join(map(str, sorted(self.server)))}, wrk and the "
                f"span sink to {','.join(map(str, sorted(self.load or ())))}")


@contextmanager
def on_cores(cpus: frozenset[int] | None) -> Iterator[None]:
    """Run the calling thread (and the processes it starts) on ``cpus``, then restore."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def wait_until_idle(servers: list[GunicornServer]) -> None:
    """Wait (bounded) until no server is still busy, e.g. exporting its last batch of spans."""
    deadline = time.monotonic() + IDLE_TIMEOUT
    last = sum(wrk.process_tree_cpu(s.pid) for s in servers)
    while time.monotonic() < deadline:
        time.sleep(IDLE_WINDOW)
        now = sum(wrk.process_tree_cpu(s.pid) for s in servers)
        if now - last < IDLE_CPU_SECONDS:
            return
        last = now


def admin_token(database_url: str) -> str:
    """A token of the bench database's admin, signed as the harness's servers verify it."""
    from sqlalchemy import select

    from app import create_app
    from app.auth.tokens import issue_token
    from app.extensions import db
    from app.models import User

    app = create_app({"DATABASE_URL": database_url, "JWT_PRIVATE_KEY": PRODUCTION_SECRETS["JWT_PRIVATE_KEY"],
                      "JWT_KEY_ID": PRODUCTION_SECRETS["JWT_KEY_ID"]})
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.email == BENCH_ADMIN))
        if admin is None:
            sys.exit(f"the bench database has no {BENCH_ADMIN}")
        token, _ = issue_token(admin.id, admin.role.value, admin.token_version)
        db.engine.dispose()
    return token


def measure(setups: list[Setup], database_url: str, seconds: int, rounds: int, cores: Cores) -> None:
    # The users API needs a token (the admin's: the list is theirs) and limits reads per user.
    api = any(setup.path.startswith("/api/") for setup in setups)
    headers = (f"Authorization: Bearer {admin_token(database_url)}",) if api else ()
    with ExitStack() as stack:
        servers = []
        for setup in setups:
            env = {"DATABASE_URL": database_url, "LOG_LEVEL": "INFO", **setup.env}
            if api:
                env["RATE_LIMIT_READS"] = "100000000 per minute"
            with on_cores(cores.server):
                lookout = setup.target == "app.wsgi:app"
                server = stack.enter_context(GunicornServer(
                    env, workers=setup.workers, threads=setup.threads, worker_class=setup.worker_class,
                    target=setup.target, ready_path="/readyz" if api and lookout else setup.path))
            servers.append(server)
        with on_cores(cores.load):
            for server, setup in zip(servers, setups, strict=True):  # warm-up: imports, pools, caches
                wrk.run(server.url + setup.path, 1, warmup=0, headers=headers)
            pairs = list(zip(setups, servers, strict=True))
            for round_ in range(rounds):
                for setup, server in pairs if round_ % 2 == 0 else reversed(pairs):
                    wait_until_idle(servers)
                    result = wrk.run(server.url + setup.path, seconds, server_pid=server.pid, warmup=0,
                                     headers=headers)
                    if result.errors:
                        sys.exit(f"{setup.name}: {result.errors} failed requests; the numbers would mislead")
                    setup.results.append(result)
                    print(f"  round {round_ + 1}: {setup.name:<52} {result.rps:8.0f} req/s  "
                          f"p99 {result.p99 * 1000:6.1f} ms  {result.cpu_per_request * 1e6:6.0f} µs CPU/req",
                          flush=True)


def table(setups: list[Setup]) -> str:
    """Median throughput, p99 and server CPU per request of each setup, and how it compares with
    the first row (median of the per-round ratios)."""
    baseline = setups[0]
    rows = ["| setup | req/s | p99 ms | server CPU µs/req | throughput vs first row | CPU/req vs first row |",
            "|---|---:|---:|---:|---:|---:|"]
    for setup in setups:
        throughput, efficiency = ratios(setup, baseline)
        cpu = statistics.median(1 / e for e in efficiency.rounds)  # CPU per request, per round
        rows.append(f"| {setup.name} | {setup.median().rps:.0f} | {setup.p99() * 1000:.1f} | "
                    f"{setup.cpu_per_request() * 1e6:.0f} | {throughput.median:.2f} | {cpu:.2f} |")
    return "\n".join(rows)


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios of one comparison: their median and interquartile range."""

    rounds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    def quartiles(self) -> tuple[float, float]:
        if len(self.rounds) < 2:
            return self.rounds[0], self.rounds[0]
        low, _, high = statistics.quantiles(self.rounds, n=4, method="inclusive")
        return low, high

    def by_round(self) -> str:
        """Every round's ratio: how far noise moved the comparison."""
        return ", ".join(f"{r:.2f}" for r in self.rounds)

    def __str__(self) -> str:
        low, high = self.quartiles()
        return f"{self.median:.2f} (middle half of rounds {low:.2f}-{high:.2f})"


def ratios(first: Setup, second: Setup) -> tuple[Ratio, Ratio]:
    """(throughput, requests per CPU-second) of ``first`` over ``second``, round by round."""
    pairs = list(zip(first.results, second.results, strict=True))
    return (Ratio(tuple(x.rps / y.rps for x, y in pairs)),
            Ratio(tuple(y.cpu_per_request / x.cpu_per_request for x, y in pairs)))


@contextmanager
def sqlite_database() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/bench.db"
        _migrate_and_seed(url, 0)
        yield url


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A fresh database with 100 users, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(server_url).set(drivername="postgresql")
    name = f"lookout_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        _migrate_and_seed(url, 100)
        yield url
    finally:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def mysql_database(server_url: str) -> Iterator[str]:
    """A fresh MariaDB/MySQL database with the same 100 users, dropped afterwards."""
    import pymysql
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    name = f"lookout_bench_{uuid.uuid4().hex[:8]}"

    def execute(statement: str) -> None:
        with pymysql.connect(host=server.host or "127.0.0.1", port=server.port or 3306,
                             user=server.username or "root", password=server.password or "",
                             autocommit=True, connect_timeout=5) as conn, conn.cursor() as cursor:
            cursor.execute(statement)

    execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    url = server.set(drivername="mysql", database=name).render_as_string(hide_password=False)
    try:
        _migrate_and_seed(url, 100)
        yield url
    finally:
        execute(f"DROP DATABASE IF EXISTS `{name}`")


def _migrate_and_seed(url: str, users: int) -> None:
    env = {**os.environ, "LOOKOUT_ENV": "development", "DATABASE_URL": url}
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    subprocess.run([*flask, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    if users:
        subprocess.run([*flask, "users", "seed", str(users)], env=env, check=True, capture_output=True,
                       timeout=120)
        # The users API needs a token: an admin for the list (instructions.py logs in as it).
        subprocess.run([*flask, "users", "create", "--admin", "--email", BENCH_ADMIN, "--name", "Bench"],
                       env={**env, "LOOKOUT_USER_PASSWORD": "bench-admin-password"}, check=True,
                       capture_output=True, timeout=120)


def verdict(ratio: Ratio, goal: float) -> str:
    """Met only when most rounds clear the goal: the median and the lower quartile."""
    low, _ = ratio.quartiles()
    if low >= goal:
        return f"goal ≥ {goal:g} met"
    if ratio.median >= goal:
        return f"goal ≥ {goal:g} unclear (median above, a quarter of rounds below)"
    return f"goal ≥ {goal:g} not met"


def comparison(label: str, first: Setup, second: Setup, goal: float | None = None) -> str:
    throughput, efficiency = ratios(first, second)
    verdict_text = f"; {verdict(throughput, goal)}" if goal is not None else ""
    return (f"- {label}: throughput {throughput}, requests per CPU-second {efficiency.median:.2f}"
            f"{verdict_text} (round by round: {throughput.by_round()})")


def trivial(sink: Sink, seconds: int, rounds: int, cores: Cores) -> str:
    export = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    setups = [
        Setup("(a) Flask alone", {}, target="loadtests.bench.baseline:bare"),
        Setup("(b) prometheus_flask_exporter + FlaskInstrumentor, 100%",
              {"LOOKOUT_BENCH_APP": "common", **export}, target="loadtests.bench.baseline:common"),
        Setup("(b') Lookout, own telemetry off, (b)'s added",
              {"LOOKOUT_BENCH_APP": "lookout_common", **export},
              target="loadtests.bench.baseline:lookout_common"),
        Setup("(c) Lookout, default sampling", export),
        Setup("(d) Lookout, 100% sampling", {**export, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}),
        # (a) and (b) write no log line; this is (c) without its JSON access line.
        Setup("(e) Lookout, default sampling, no access line", {**export, "LOG_LEVEL": "WARNING"}),
    ]
    with sqlite_database() as url:
        measure(setups, url, seconds, rounds, cores)
    a, b, b2, c, d, quiet = setups
    lines = [comparison("(c)/(b)", c, b, goal=1.2), comparison("(c)/(b')", c, b2),
             comparison("(c)/(a)", c, a), comparison("(d)/(b)", d, b),
             comparison("(e)/(b), both without log lines", quiet, b),
             comparison("(c)/(e), the access line", c, quiet)]
    return table(setups) + "\n\nRatios:\n" + "\n".join(lines)


def users(sink: Sink, database_url: str, seconds: int, rounds: int, cores: Cores,
          mysql_url: str | None = None) -> str:
    """The users list on PostgreSQL; with ``mysql_url``, also on MariaDB/MySQL, same rows (the
    seeded databases give the admin the same id, so the admin's token serves both)."""
    export = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    setups = [
        Setup("telemetry off (TELEMETRY_ENABLED=false)", {"TELEMETRY_ENABLED": "false"}, USERS_PATH),
        Setup("telemetry on, default sampling", export, USERS_PATH),
        Setup("telemetry on, start-up heap not frozen (GUNICORN_GC_FREEZE=false)",
              {**export, "GUNICORN_GC_FREEZE": "false"}, USERS_PATH),
    ]
    if mysql_url:
        setups.append(Setup("telemetry on, default sampling, on MariaDB/MySQL",
                            {**export, "DATABASE_URL": mysql_url}, USERS_PATH))
    measure(setups, database_url, seconds, rounds, cores)
    off, on, unfrozen = setups[:3]
    lines = [comparison("On/off", on, off, goal=0.92),
             comparison("Heap frozen/not frozen, telemetry on", on, unfrozen)]
    if mysql_url:
        lines.append(comparison("MariaDB/PostgreSQL, telemetry on", setups[3], on))
    return table(setups) + "\n\n" + "\n".join(lines)


def anchor(sink: Sink, database_url: str, redis_url: str | None, seconds: int, rounds: int,
           cores: Cores) -> str:
    """The tutorial's users API (anchor.py) against Lookout as deployed, in paired rounds."""
    export = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    cache = {"CACHE_URL": redis_url, "CACHE_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}"} if redis_url else {}
    setups = [Setup("anchor: list page", {}, USERS_PATH, target=ANCHOR),
              Setup("Lookout: list page, default sampling", export, USERS_PATH),
              Setup("anchor: one user by id", {}, ONE_USER_PATH, target=ANCHOR),
              Setup("Lookout: one user by id (admin), default sampling", export, ONE_USER_PATH)]
    if cache:
        setups.append(Setup("Lookout: one user by id, Redis cache (hits)", {**export, **cache},
                            ONE_USER_PATH))
    measure(setups, database_url, seconds, rounds, cores)
    lines = [comparison("Lookout/anchor, list page", setups[1], setups[0], goal=1.0),
             comparison("Lookout/anchor, one user", setups[3], setups[2], goal=1.0)]
    if cache:
        lines.append(comparison("Lookout with cache/anchor, one user", setups[4], setups[2], goal=1.0))
        lines.append(comparison("cache hits/no cache, one user", setups[4], setups[3]))
    return table(setups) + "\n\n" + "\n".join(lines)


def workers(sink: Sink, database_url: str, seconds: int, rounds: int, cores: Cores) -> str:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    setups = [Setup(f"{kind} (1 worker{', 8 threads' if kind == 'gthread' else ''})", env, USERS_PATH,
                    worker_class=kind) for kind in ("gthread", "sync", "gevent")]
    measure(setups, database_url, seconds, rounds, cores)
    return table(setups)


def process_models(sink: Sink, database_url: str, seconds: int, rounds: int) -> str:
    """The exemplar trade-off: one worker with threads, or several workers in multiprocess mode.
    Not pinned: a second worker's point is a second core."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    setups = [Setup("1 worker x 8 threads (exemplars, Kubernetes default)", env, USERS_PATH),
              Setup("2 workers x 4 threads (multiprocess, no exemplars)", env, USERS_PATH,
                    workers=2, threads=4)]
    measure(setups, database_url, seconds, rounds, Cores())
    return table(setups)


def instruction_counts(database_url: str | None, requests: int, mysql_url: str | None = None) -> str:
    """In-process instructions per request (valgrind): exact where throughput is noisy; with
    ``mysql_url``, the users endpoints also on MariaDB/MySQL, beside PostgreSQL's."""
    lookout = {"LOOKOUT_ENV": "production", **PRODUCTION_SECRETS}
    with sqlite_database() as url:
        # (name, app, env, ratio) on GET /, which is cheap: three times the requests for the same
        # precision. A ratio: counted dropped and sampled, weighted (instructions.sampled_mix).
        small = [("(a) Flask alone", "bare", {}, None),
                 ("(b) prometheus_flask_exporter + FlaskInstrumentor, 100%", "common", {}, None),
                 ("(c) Lookout, default sampling", "lookout", {**lookout, "DATABASE_URL": url},
                  DEFAULT_SAMPLE_RATIO),
                 ("(c) with tracing off (OTEL_SDK_DISABLED=true)", "lookout",
                  {**lookout, "DATABASE_URL": url, "OTEL_SDK_DISABLED": "true"}, None)]
        counts = [instructions.count(name, app, "/", env, requests * 3) if ratio is None
                  else instructions.sampled_mix(name, app, "/", env, requests * 3, ratio)
                  for name, app, env, ratio in small]
    a, b, c, untraced = counts
    lines = [f"- (c)/(b): {b.per_request / c.per_request:.3f}",
             f"- (c)/(a): {a.per_request / c.per_request:.3f}",
             f"- (c) with tracing off/(b): {b.per_request / untraced.per_request:.3f}"]
    sampled = [f"GET / {(c.sampled_extra or 0) / 1e6:.3f}"]
    if database_url:
        env = {**lookout, "DATABASE_URL": database_url, "BENCH_AS": "admin"}
        off = instructions.count("users endpoint (admin list page), telemetry off", "lookout", USERS_PATH,
                                 {**env, "TELEMETRY_ENABLED": "false"}, requests)
        on = instructions.sampled_mix("users endpoint (admin list page), telemetry on, default sampling",
                                      "lookout", USERS_PATH, env, requests, DEFAULT_SAMPLE_RATIO)
        profile = instructions.sampled_mix(
            "GET /api/v1/users/{id} as a regular user (public profile), default sampling", "lookout",
            PROFILE_PATH, {**env, "BENCH_AS": "user"}, requests, DEFAULT_SAMPLE_RATIO)
        counts += [off, on, profile]
        lines.append(f"- users endpoint on/off: {off.per_request / on.per_request:.3f}")
        sampled.append(f"users endpoint {(on.sampled_extra or 0) / 1e6:.3f}")
        counts += anchor_counts(database_url, env, on, requests, lines)
    if mysql_url:
        counts += mysql_counts(mysql_url, lookout, counts if database_url else [], requests, lines)
    rows = ["| setup | instructions per request (millions) |", "|---|---:|"]
    rows += [f"| {x.name} | {x.per_request / 1e6:.3f} |" for x in counts]
    return ("\n".join(rows) + "\n\nRatios of requests per instruction (what throughput would be "
            "if nothing but this code ran):\n" + "\n".join(lines) + "\n\nLookout's default-sampling "
            f"rows weigh a dropped and a sampled request by the default ratio ({DEFAULT_SAMPLE_RATIO:.0%}); "
            f"sampling a request adds (millions): {', '.join(sampled)}.")


def anchor_counts(database_url: str, env: dict[str, str], on: instructions.Count, requests: int,
                  lines: list[str]) -> list[instructions.Count]:
    """The tutorial's users API against Lookout as deployed, and Lookout's Redis cache, hit
    against miss; appends the ratios (goal: Lookout at most the anchor's count) to ``lines``."""
    anchor_env = {"DATABASE_URL": database_url}
    anchor_list = instructions.count("anchor: list page (tutorial API, no telemetry or auth)", "anchor",
                                     USERS_PATH, anchor_env, requests)
    anchor_one = instructions.count("anchor: one user by id", "anchor", PROFILE_PATH, anchor_env, requests)
    admin = {**env, "BENCH_AS": "admin"}
    one = instructions.sampled_mix("GET /api/v1/users/{id} as an admin (full record), default sampling",
                                   "lookout", PROFILE_PATH, admin, requests, DEFAULT_SAMPLE_RATIO)
    counts = [anchor_list, anchor_one, one]
    for name, ours, theirs in (("list page", on, anchor_list), ("one user", one, anchor_one)):
        ratio = ours.per_request / theirs.per_request
        goal, stretch = ("met" if ratio <= 1 else "not met"), ("met" if ratio <= 0.7 else "not met")
        lines.append(f"- Lookout/anchor, {name}: {ratio:.3f} (goal ≤ 1: {goal}; stretch ≤ 0.7: {stretch})")
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        lines.append("- cache comparison skipped: set BENCH_REDIS_URL")
        return counts
    cached = {**admin, "CACHE_URL": redis_url, "CACHE_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}"}
    # Up to WARM_UP + requests users are read once each: the seeded 100 must cover them.
    rotating = min(requests, 100 - instructions.WARM_UP)
    hit = instructions.sampled_mix("one user by id, Redis cache hit (the caller's record a hit too)",
                                   "lookout", PROFILE_PATH, cached, requests, DEFAULT_SAMPLE_RATIO)
    miss = instructions.sampled_mix("one user by id, Redis cache miss and fill (the caller's a hit)",
                                    "lookout", ROTATING_PATH, {**cached, "BENCH_ROTATE": "1"}, rotating,
                                    DEFAULT_SAMPLE_RATIO)
    lines += [f"- cache hit/miss, one user: {hit.per_request / miss.per_request:.3f}",
              f"- Lookout with cache (hit)/anchor, one user: {hit.per_request / anchor_one.per_request:.3f}",
              f"- cache hit/no cache, one user: {hit.per_request / one.per_request:.3f}"]
    return [*counts, hit, miss]


def mysql_counts(mysql_url: str, lookout: dict[str, str], postgres: list[instructions.Count],
                 requests: int, lines: list[str]) -> list[instructions.Count]:
    """The users endpoints on MariaDB/MySQL (driver, dialect and server round trips differ);
    appends their ratios to PostgreSQL's rows of the same requests, when those were counted."""
    env = {**lookout, "DATABASE_URL": mysql_url}
    listed = instructions.sampled_mix("MariaDB/MySQL: users endpoint (admin list page), default sampling",
                                      "lookout", USERS_PATH, {**env, "BENCH_AS": "admin"}, requests,
                                      DEFAULT_SAMPLE_RATIO)
    one = instructions.sampled_mix("MariaDB/MySQL: GET /api/v1/users/{id} as a regular user, "
                                   "default sampling", "lookout", PROFILE_PATH, {**env, "BENCH_AS": "user"},
                                   requests, DEFAULT_SAMPLE_RATIO)
    pairs = {"users endpoint (admin list page), telemetry on, default sampling": ("list page", listed),
             "GET /api/v1/users/{id} as a regular user (public profile), default sampling": ("one user", one)}
    for count in postgres:
        if count.name in pairs:
            label, ours = pairs[count.name]
            lines.append(f"- MariaDB/PostgreSQL, {label}: {count.per_request / ours.per_request:.3f}")
    return [listed, one]


def scrapes() -> str:
    rows = ["| workers' files | files on disk | scrape ms |", "|---:|---:|---:|"]
    for count, files, seconds in scrape.measure():
        rows.append(f"| {count} | {files} | {seconds * 1000:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3, help="per setup and round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", default="trivial,anchor,users,workers,models,scrape,instructions")
    parser.add_argument("--requests", type=int, default=100,
                        help="users-endpoint requests per instruction count (3x for GET /)")
    parser.add_argument("--no-pin", action="store_true", help="leave servers and wrk to the scheduler")
    args = parser.parse_args(argv)
    cores = Cores() if args.no_pin else Cores.split()
    parts = set(args.only.split(","))
    if parts & {"trivial", "anchor", "users", "workers", "models"} and not wrk.available():
        sys.exit("wrk is needed: apt-get install wrk (Debian/Ubuntu) or brew install wrk (macOS)")
    database = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    mysql = os.environ.get("BENCH_MYSQL_URL") or os.environ.get("TEST_MYSQL_URL")
    cpu = platform.processor() or platform.machine()
    print(f"# Lookout benchmark\n\nMachine: {os.cpu_count()} cores, {cpu}, "
          f"Python {platform.python_version()}; wrk -t1 -c16, {args.seconds:g} s per setup and round, "
          f"{args.rounds} rounds in alternating order, {cores.describe()}. Ratios are medians of the "
          f"per-round ratios; absolute numbers are this machine's.\n", flush=True)
    with on_cores(cores.load):  # the sink's thread starts here and stays off the servers' core
        sink = Sink()
    try:
        if "trivial" in parts:
            print("## Small JSON document (GET /)\n", flush=True)
            print(trivial(sink, args.seconds, args.rounds, cores) + "\n", flush=True)
        if parts & {"anchor", "users", "workers", "models"}:
            if not database:
                print("Users endpoint parts skipped: set BENCH_DATABASE_URL to a PostgreSQL server.\n")
            else:
                on_mysql = mysql if "users" in parts else None
                with (postgres_database(database) as url,
                      mysql_database(on_mysql) if on_mysql else nullcontext(None) as mysql_url):
                    if "anchor" in parts:
                        print("## Against the tutorial's users API (the anchor)\n", flush=True)
                        redis = os.environ.get("BENCH_REDIS_URL") or os.environ.get("TEST_REDIS_URL")
                        print(anchor(sink, url, redis, args.seconds, args.rounds, cores) + "\n", flush=True)
                    if "users" in parts:
                        where = "PostgreSQL" + (" and MariaDB/MySQL" if mysql_url else "")
                        print(f"## Users endpoint on {where} (GET {USERS_PATH})\n", flush=True)
                        print(users(sink, url, args.seconds, args.rounds, cores, mysql_url) + "\n",
                              flush=True)
                    if "workers" in parts:
                        print("## Worker classes on the users endpoint\n", flush=True)
                        print(workers(sink, url, args.seconds, args.rounds, cores) + "\n", flush=True)
                    if "models" in parts:
                        print("## Process models on the users endpoint\n", flush=True)
                        print(process_models(sink, url, args.seconds, args.rounds) + "\n", flush=True)
        if "instructions" in parts:
            print("## Instructions per request (in-process, valgrind)\n", flush=True)
            if not instructions.available():
                print("Skipped: valgrind is needed (apt-get install valgrind).\n")
            else:
                with (postgres_database(database) if database else nullcontext(None) as url,
                      mysql_database(mysql) if mysql else nullcontext(None) as mysql_url):
                    print(instruction_counts(url, args.requests, mysql_url) + "\n", flush=True)
        if "scrape" in parts:
            print("## Multiprocess scrape time against worker files\n", flush=True)
            print(scrapes() + "\n", flush=True)
    finally:
        sink.close()
    print(f"Spans received by the OTLP sink: {sink.batches} batches.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
