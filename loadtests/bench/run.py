"""``make bench``: throughput and p99 of each setup, and their ratios, measured in one run.

Usage:
    python -m loadtests.bench.run [--seconds 10] [--rounds 3] [--only trivial,users,workers,models,scrape]

Reads BENCH_DATABASE_URL (else TEST_DATABASE_URL): a PostgreSQL server on which a throwaway
database is created for the users-endpoint parts; without one those parts are skipped.
Every server is gunicorn on 127.0.0.1 with the same settings (one worker, 8 threads unless
the part compares worker classes). Rounds interleave the setups so that noise from other
work on the machine falls on all of them; the median round is reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from loadtests.bench import scrape, wrk
from loadtests.bench.sink import Sink
from loadtests.server import GunicornServer


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

    def cpu_per_request(self) -> float:
        return statistics.median(r.cpu_per_request for r in self.results)


def measure(setups: list[Setup], database_url: str, seconds: int, rounds: int) -> None:
    for round_ in range(rounds):
        for setup in setups:
            env = {"DATABASE_URL": database_url, "LOG_LEVEL": "INFO", **setup.env}
            with GunicornServer(env, workers=setup.workers, threads=setup.threads,
                                worker_class=setup.worker_class, target=setup.target,
                                ready_path=setup.path) as server:
                result = wrk.run(server.url + setup.path, seconds, server_pid=server.pid)
            if result.errors:
                sys.exit(f"{setup.name}: {result.errors} failed requests; the numbers would mislead")
            setup.results.append(result)
            print(f"  round {round_ + 1}: {setup.name:<44} {result.rps:8.0f} req/s  "
                  f"p99 {result.p99 * 1000:6.1f} ms  {result.cpu_per_request * 1e6:6.0f} µs CPU/req",
                  flush=True)


def table(setups: list[Setup]) -> str:
    """Throughput and p99 (median round), and server CPU per request, each against the first row."""
    baseline = setups[0]
    rows = ["| setup | req/s | p99 ms | server CPU µs/req | throughput vs first row | CPU/req vs first row |",
            "|---|---:|---:|---:|---:|---:|"]
    for setup in setups:
        r = setup.median()
        rows.append(f"| {setup.name} | {r.rps:.0f} | {r.p99 * 1000:.1f} | "
                    f"{setup.cpu_per_request() * 1e6:.0f} | "
                    f"{r.rps / baseline.median().rps:.2f} | "
                    f"{setup.cpu_per_request() / baseline.cpu_per_request():.2f} |")
    return "\n".join(rows)


def ratios(first: Setup, second: Setup) -> tuple[float, float]:
    """(throughput ratio, CPU-efficiency ratio) of ``first`` over ``second``."""
    return (first.median().rps / second.median().rps,
            second.cpu_per_request() / first.cpu_per_request())


def per_round(first: Setup, second: Setup) -> str:
    """Throughput ratios of the same round: how far noise moved the comparison."""
    return ", ".join(f"{x.rps / y.rps:.2f}" for x, y in zip(first.results, second.results, strict=True))


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


def _migrate_and_seed(url: str, users: int) -> None:
    env = {**os.environ, "LOOKOUT_ENV": "development", "DATABASE_URL": url}
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    subprocess.run([*flask, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    if users:
        subprocess.run([*flask, "users", "seed", str(users)], env=env, check=True, capture_output=True,
                       timeout=120)


def trivial(sink: Sink, seconds: int, rounds: int) -> str:
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
        measure(setups, url, seconds, rounds)
    a, b, b2, c, d, quiet = setups
    lines = [f"- {label}: throughput {t:.2f}, requests per CPU-second {e:.2f} "
             f"(round by round: {per_round(first, second)})"
             for label, first, second in (("(c)/(b), goal ≥ 1.2", c, b), ("(c)/(b')", c, b2),
                                          ("(c)/(a)", c, a), ("(d)/(b)", d, b),
                                          ("(e)/(b), both without log lines", quiet, b),
                                          ("(c)/(e), the access line", c, quiet))
             for t, e in [ratios(first, second)]]
    return table(setups) + "\n\nRatios:\n" + "\n".join(lines)


def users(sink: Sink, database_url: str, seconds: int, rounds: int) -> str:
    path = "/api/v1/users?per_page=20"
    setups = [
        Setup("telemetry off (TELEMETRY_ENABLED=false)", {"TELEMETRY_ENABLED": "false"}, path),
        Setup("telemetry on, default sampling", {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}, path),
    ]
    measure(setups, database_url, seconds, rounds)
    throughput, efficiency = ratios(setups[1], setups[0])
    return table(setups) + (f"\n\nOn/off: throughput {throughput:.2f}, requests per CPU-second "
                            f"{efficiency:.2f} (goal ≥ 0.92; round by round: "
                            f"{per_round(setups[1], setups[0])}).")


def workers(sink: Sink, database_url: str, seconds: int, rounds: int) -> str:
    path = "/api/v1/users?per_page=20"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    setups = [Setup(f"{kind} (1 worker{', 8 threads' if kind == 'gthread' else ''})", env, path,
                    worker_class=kind) for kind in ("gthread", "sync", "gevent")]
    measure(setups, database_url, seconds, rounds)
    return table(setups)


def process_models(sink: Sink, database_url: str, seconds: int, rounds: int) -> str:
    """The exemplar trade-off: one worker with threads, or several workers in multiprocess mode."""
    path = "/api/v1/users?per_page=20"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    setups = [Setup("1 worker x 8 threads (exemplars, Kubernetes default)", env, path),
              Setup("2 workers x 4 threads (multiprocess, no exemplars)", env, path, workers=2, threads=4)]
    measure(setups, database_url, seconds, rounds)
    return table(setups)


def scrapes() -> str:
    rows = ["| workers' files | files on disk | scrape ms |", "|---:|---:|---:|"]
    for count, files, seconds in scrape.measure():
        rows.append(f"| {count} | {files} | {seconds * 1000:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="trivial,users,workers,models,scrape")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    if parts & {"trivial", "users", "workers", "models"} and not wrk.available():
        sys.exit("wrk is needed: apt-get install wrk (Debian/Ubuntu) or brew install wrk (macOS)")
    database = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    cpu = platform.processor() or platform.machine()
    print(f"# Lookout benchmark\n\nMachine: {os.cpu_count()} cores, {cpu}, "
          f"Python {platform.python_version()}; wrk -t1 -c16, {args.seconds:g} s per setup, "
          f"median of {args.rounds} interleaved rounds. Numbers are relative to this machine.\n", flush=True)
    sink = Sink()
    try:
        if "trivial" in parts:
            print("## Small JSON document (GET /)\n", flush=True)
            print(trivial(sink, args.seconds, args.rounds) + "\n", flush=True)
        if parts & {"users", "workers", "models"}:
            if not database:
                print("Users endpoint parts skipped: set BENCH_DATABASE_URL to a PostgreSQL server.\n")
            else:
                with postgres_database(database) as url:
                    if "users" in parts:
                        print("## Users endpoint on PostgreSQL (GET /api/v1/users?per_page=20)\n", flush=True)
                        print(users(sink, url, args.seconds, args.rounds) + "\n", flush=True)
                    if "workers" in parts:
                        print("## Worker classes on the users endpoint\n", flush=True)
                        print(workers(sink, url, args.seconds, args.rounds) + "\n", flush=True)
                    if "models" in parts:
                        print("## Process models on the users endpoint\n", flush=True)
                        print(process_models(sink, url, args.seconds, args.rounds) + "\n", flush=True)
        if "scrape" in parts:
            print("## Multiprocess scrape time against worker files\n", flush=True)
            print(scrapes() + "\n", flush=True)
    finally:
        sink.close()
    print(f"Spans received by the OTLP sink: {sink.batches} batches.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
