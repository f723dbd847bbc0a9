"""``make capacity-notifier``: emails per second one notifier consumer process sends within its
SLO, and the KEDA ScaledObject numbers that follow (loadtests/queue_sizing.py).

Usage:
    python -m loadtests.notifier_capacity --broker-url AMQP_URL [--database-url URL]
        [--messages 1000] [--hold-seconds 30] [--max-seconds 180] [--peak-events 50]
        [--reports reports/capacity]

Real parts, all on 127.0.0.1: RabbitMQ (``--broker-url`` or LOOKOUT_LOADTEST_BROKER_URL; its
notifier queue is purged: give the run a broker or vhost of its own), PostgreSQL (``--database-url``,
the notifier's own database, migrated first; without it, a fresh database is created on the
server of DATABASE_URL and dropped afterwards, or an SQLite file in the reports folder when
DATABASE_URL is not PostgreSQL), an aiosmtpd SMTP server in this process, and one consumer
process (``flask --app app.notifier:create_app notifier consume``, development settings: its
production settings refuse the server's plain SMTP), started and stopped by PID.

1. burst: ``--messages`` user.created events published at once, as the relay publishes them; the
   consumer's rate is emails per second from the first acceptance to the last (every email must
   arrive; their latency is the backlog's, which ``--messages`` sets, so it is shown, not judged).
2. hold: events published at 70 % of that rate for ``--hold-seconds``; each email's latency (the
   server's acceptance less the event's ``occurred_at``) against the notifier SLO.

Bounded: each phase gives up ``--max-seconds`` after its first publish. Writes ``notifier.md`` and
``notifier.json`` in the reports folder; exits 1 when a phase breaks the SLO.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
from aiosmtpd.controller import Controller
from sqlalchemy.engine import make_url

from dashboards import load_slo
from loadtests.capacity import machine, tree_cpu
from loadtests.harness import ROOT, free_port, launch, stop, wait_until
from loadtests.queue_sizing import UTILISATION, Phase, advise, markdown, rate_of, violations

NOTIFIER_APP = "app.notifier:create_app"
BROKER_VAR = "LOOKOUT_LOADTEST_BROKER_URL"


class Sink:
    """aiosmtpd handler: accepts every message after ``delay`` seconds (a slow server, for the
    tests' fault) and records when it accepted each event's email (keyed by the event id the
    notifier's Message-ID carries)."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.accepted: dict[str, float] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        for line in envelope.content.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                event_id = line.split(b"<", 1)[-1].split(b".notifier@", 1)[0].decode()
                with self.lock:
                    self.accepted.setdefault(event_id, time.time())
                break
        return "250 Message accepted for delivery"

    def times(self, ids: dict[str, float]) -> dict[str, float]:
        """Acceptance times of the events in ``ids`` (event id -> publish time) accepted so far."""
        with self.lock:
            return {event_id: self.accepted[event_id] for event_id in ids if event_id in self.accepted}


class Publisher:
    """Publishes user.created events as the relay does: persistent, confirmed, mandatory."""

    def __init__(self, broker_url: str) -> None:
        from app.platform.messaging import NOTIFIER_QUEUE, declare_topology

        self.connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        self.channel = self.connection.channel()
        declare_topology(self.channel)
        self.channel.queue_purge(NOTIFIER_QUEUE)
        self.channel.confirm_delivery()

    def publish(self) -> tuple[str, float]:
        """Publish one event now; return its id and its ``occurred_at`` as a Unix time."""
        from app.platform.messaging import EVENTS_EXCHANGE

        event_id, now = str(uuid.uuid4()), datetime.now(UTC)
        body = {"version": 1, "id": event_id, "type": "user.created",
                "occurred_at": now.isoformat().replace("+00:00", "Z"), "user_id": 1,
                "data": {"email": f"capacity-{event_id}@example.com", "name": "Capacity", "role": "user"}}
        self.channel.basic_publish(EVENTS_EXCHANGE, "user.created", json.dumps(body).encode(),
                                   pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                                        message_id=event_id, type="user.created"),
                                   mandatory=True)
        return event_id, now.timestamp()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


def run_phase(name: str, publisher: Publisher, sink: Sink, consumer_pid: int, count: int, rate: float,
              max_seconds: float, held_to_slo: bool = True) -> Phase:
    """Publish ``count`` events at ``rate`` per second (``math.inf``: at once), wait (bounded by
    ``max_seconds`` from the first publish) for their emails and measure them."""
    published: dict[str, float] = {}
    cpu_before, started = tree_cpu(consumer_pid), time.monotonic()
    for n in range(count):
        if not math.isinf(rate):  # pace the publisher: the n-th event is due n / rate after the start
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
        event_id, at = publisher.publish()
        published[event_id] = at
    try:
        wait_until(lambda: len(sink.times(published)) >= count, f"{count} emails ({name})",
                   max(0.0, started + max_seconds - time.monotonic()), 0.05)
    except TimeoutError:
        pass  # reported: the missing ones count against the SLO
    seconds = time.monotonic() - started
    cores = (tree_cpu(consumer_pid) - cpu_before) / seconds
    accepted = sink.times(published)
    return Phase(name=name, offered=rate, published=count,
                 latencies=tuple(accepted[i] - published[i] for i in accepted), seconds=seconds,
                 rate=rate_of(list(accepted.values())), consumer_cores=cores, held_to_slo=held_to_slo)


@contextmanager
def consumer(broker_url: str, database_url: str, smtp_port: int, workdir: Path) -> Iterator[int]:
    """Migrate the notifier's database, start one consumer process and yield its pid; stop it after."""
    import subprocess

    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
           "LOOKOUT_ENV": "development", "DATABASE_URL": database_url, "BROKER_URL": broker_url,
           "SMTP_URL": f"smtp+plain://127.0.0.1:{smtp_port}", "CONSUMER_METRICS_ADDRESS": "127.0.0.1",
           "CONSUMER_METRICS_PORT": str(free_port()), "OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "WARNING"}
    flask = [sys.executable, "-m", "flask", "--app", NOTIFIER_APP]
    done = subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    if done.returncode:
        raise RuntimeError(f"migrating the notifier's database failed:\n{done.stderr[-2000:]}")
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "notifier-consumer.log").open("wb") as log:
        process = launch([*flask, "notifier", "consume"], cwd=ROOT, env=env, stdout=log,
                         stderr=subprocess.STDOUT)
        try:
            port = int(env["CONSUMER_METRICS_PORT"])

            def connected() -> bool:  # the consumer's own gauge: it consumes the queue
                if process.poll() is not None:
                    raise RuntimeError(f"the consumer exited with {process.returncode}; see {log.name}")
                try:
                    import requests
                    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                except OSError:
                    return False
                return "lookout_notifier_broker_connected 1.0" in text

            wait_until(connected, "the notifier's consumer connected to the broker", 120, 0.1)
            yield process.pid
        finally:
            stop(process)


def measure(broker_url: str, database_url: str, workdir: Path, messages: int, hold_seconds: float,
            max_seconds: float, sink: Sink | None = None) -> list[Phase]:
    """The burst, then the hold at ``UTILISATION`` of the burst's rate (skipped when the burst
    emailed fewer than two events)."""
    sink = sink or Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    publisher = Publisher(broker_url)
    try:
        with consumer(broker_url, database_url, smtp.port, workdir) as pid:
            phases = [run_phase("burst", publisher, sink, pid, messages, math.inf, max_seconds,
                                held_to_slo=False)]
            rate = phases[0].rate
            if rate > 0 and not math.isinf(rate):
                hold_rate = rate * UTILISATION
                phases.append(run_phase("hold", publisher, sink, pid, max(2, round(hold_rate * hold_seconds)),
                                        hold_rate, max_seconds))
            return phases
    finally:
        publisher.close()
        smtp.stop()


@contextmanager
def notifier_database(given: str | None, workdir: Path) -> Iterator[tuple[str, str]]:
    """Yield (URL, description) of the notifier's database for the run."""
    if given:
        yield given, f"{make_url(given).get_backend_name()} (given)"
        return
    server = os.environ.get("DATABASE_URL", "")
    if not server.startswith("postgresql"):
        path = workdir / "notifier-capacity.db"
        path.unlink(missing_ok=True)
        yield f"sqlite:///{path.resolve()}", "SQLite (no PostgreSQL DATABASE_URL)"
        return
    import psycopg

    admin = make_url(server).set(drivername="postgresql")
    name = f"lookout_notifier_capacity_{uuid.uuid4().hex[:8]}"
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(drivername="postgresql+psycopg", database=name)
        yield (url.render_as_string(hide_password=False),
               "PostgreSQL (a database of the run's own, on DATABASE_URL's server)")
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker-url", default=os.environ.get(BROKER_VAR) or None,
                        help=f"AMQP URL (or {BROKER_VAR}) of a broker or vhost of the run's own (purged)")
    parser.add_argument("--database-url", help="The notifier's database (default: see the docstring)")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports" / "capacity")
    parser.add_argument("--messages", type=int, default=1000, help="Events of the burst")
    parser.add_argument("--hold-seconds", type=float, default=30, help="Seconds of the hold phase")
    parser.add_argument("--max-seconds", type=float, default=180, help="Bound of each phase")
    parser.add_argument("--peak-events", type=float, default=50,
                        help="Peak user events per second the replicas must email (maxReplicaCount)")
    args = parser.parse_args(argv)
    if not args.broker_url:
        parser.error(f"give a broker of the run's own: --broker-url or {BROKER_VAR}")
    if args.messages < 2:
        parser.error("--messages must be at least 2: a rate needs two emails")
    reports: Path = args.reports
    reports.mkdir(parents=True, exist_ok=True)
    slo = load_slo()
    threshold, target = slo.notifier_threshold_seconds, slo.notifier_target
    about = {**machine(), "Locust": "not used"}
    with notifier_database(args.database_url, reports) as (database_url, database):
        phases = measure(args.broker_url, database_url, reports / "service", args.messages, args.hold_seconds,
                         args.max_seconds)
    passed = all(not violations(p, threshold, target) for p in phases) and len(phases) == 2
    advice = advise(phases[0].rate, threshold, args.peak_events) if passed else None
    from app.notifier.config import NotifierConfig

    prefetch = NotifierConfig.model_fields["PREFETCH_COUNT"].default
    setup = {"consumer": f"one process, prefetch {prefetch} (the default), {database}, RabbitMQ, aiosmtpd "
                         "in the measuring process", "burst": f"{args.messages} user.created events at once",
             "hold": f"{UTILISATION:.0%} of the burst's rate for {args.hold_seconds:g} s"}
    (reports / "notifier.md").write_text(markdown(phases, advice, threshold, target, args.peak_events,
                                                  about, setup))
    (reports / "notifier.json").write_text(json.dumps({
        "machine": about, "setup": setup, "threshold_seconds": threshold, "target": target,
        "phases": [{**{k: v for k, v in asdict(p).items() if k != "latencies"}, "emailed": p.emailed,
                    "p50": p.quantile(0.5), "p95": p.quantile(0.95), "p99": p.quantile(0.99),
                    "within_threshold": p.within(threshold), "violations": violations(p, threshold, target)}
                   for p in phases],
        "scaled_object": asdict(advice) if advice else None}, indent=2, default=str))
    print(f"capacity-notifier: report in {reports / 'notifier.md'}", flush=True)
    if advice is None:
        print("capacity-notifier: the consumer did not email within the SLO", file=sys.stderr)
        return 1
    print(f"capacity-notifier: {advice.rate:.1f} emails/s per consumer process; ScaledObject value "
          f"{advice.value}, replicas {advice.min_replicas}..{advice.max_replicas}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
