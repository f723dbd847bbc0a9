"""Graceful shutdown and reload of the real gunicorn under load: no request fails, in-flight
requests finish, /readyz turns 503 at once on SIGTERM while /livez answers 200 until the port
closes, and a reload (SIGHUP) swaps the workers without a failure or a not-ready answer."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid

import pytest
import requests
from conftest import PASSWORD
from traffic import Probes, SlowUpload, Traffic, listening, worker_pids

from app.models import Role
from loadtests.harness import GunicornServer, wait_until

pytestmark = pytest.mark.slow
CHEAP = {
    "PASSWORD_HASH_TIME_COST": "1",
    "PASSWORD_HASH_MEMORY_KIB": "8",
    "RATE_LIMIT_WRITES": "100000 per minute",
    "RATE_LIMIT_READS": "100000 per minute",  # Traffic reads with one token
    "LOG_LEVEL": "WARNING",
}


@pytest.fixture
def database_url(sqlite_url):
    """Process behaviour, not the database: SQLite only."""
    return sqlite_url


@pytest.fixture
def admin_email(make_user) -> str:
    return make_user(Role.ADMIN, email="admin@example.com").email


def login(url: str, email: str) -> str:
    answer = requests.post(
        f"{url}/api/v1/auth/token", json={"email": email, "password": PASSWORD}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def stored_emails(sqlite_url: str) -> set[str]:
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        return {row[0] for row in conn.execute("SELECT email FROM users")}


def capacity(url: str) -> float:
    """http_server_concurrency_limit: each worker adds its threads once it has booted."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", timeout=10).text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "http_server_concurrency_limit")


def test_sigterm_drains_then_stops_without_failing_a_request(app, admin_email):
    drain, graceful = 3.0, 12
    env = {
        "DATABASE_URL": app.config["DATABASE_URL"],
        **CHEAP,
        "GUNICORN_DRAIN_SECONDS": str(drain),
        "GUNICORN_GRACEFUL_TIMEOUT": str(graceful),
    }
    with GunicornServer(env, workers=2, threads=4) as server:
        token = login(server.url, admin_email)
        with Probes(server.url) as probes:
            with Traffic(server.url, token, threads=4, follow_readiness=True) as traffic:
                traffic.wait_for(150)
                upload = SlowUpload(server.url, token, f"slow-{uuid.uuid4().hex[:8]}@example.com")
                upload.wait_until_read()  # a request in flight when the signal comes
                terminated = time.monotonic()
                os.kill(server.pid, signal.SIGTERM)
                probes.wait_until(lambda ready, live: ready == 503)
                # The traffic reads the 503 itself, like a load balancer (asserted below).
                wait_until(lambda: traffic.stopped_by_readiness is not None, "the traffic to see 503",
                           interval=0.02)
                traffic.stop()
                # The drain is over and the port closed; the request that was in flight completes.
                probes.wait_until(lambda ready, live: live == 0)
                upload_status = upload.finish()
            exit_code = server.process.wait(graceful + 5)
            stopped = time.monotonic()

    assert exit_code == 0, server.output()[-3000:]
    assert stopped - terminated < graceful
    assert upload_status == 201
    failures = traffic.failures()
    assert len(traffic.results) >= 150 and failures == [], failures[:5]
    assert traffic.stopped_by_readiness is not None
    assert traffic.acknowledged_emails() <= stored_emails(app.config["DATABASE_URL"])

    after = [(at - terminated, ready, live) for at, ready, live in probes.samples if at > terminated]
    first_503 = next(at for at, ready, _ in after if ready == 503)
    assert first_503 < 1.0, after[:5]
    assert all(ready != 200 for at, ready, _ in after if at >= first_503), after
    closed = next(at for at, _, live in after if live == 0)
    assert closed >= drain - 0.2, after  # /livez kept answering through the drain
    assert all(live == 200 for at, _, live in after if at < closed and live != -1), after


def test_sighup_swaps_workers_without_a_failure(app, admin_email):
    env = {
        "DATABASE_URL": app.config["DATABASE_URL"],
        **CHEAP,
        "GUNICORN_DRAIN_SECONDS": "3",
        "GUNICORN_GRACEFUL_TIMEOUT": "12",
    }
    with GunicornServer(env, workers=2, threads=4) as server:
        token = login(server.url, admin_email)
        old = worker_pids(server.pid)
        with Probes(server.url) as probes, Traffic(server.url, token, threads=4) as traffic:
            traffic.wait_for(150)
            upload = SlowUpload(server.url, token, f"slow-{uuid.uuid4().hex[:8]}@example.com")
            upload.wait_until_read()  # an old worker holds it
            reloaded = time.monotonic()
            os.kill(server.pid, signal.SIGHUP)
            wait_until(lambda: worker_pids(server.pid) - old, "new workers after SIGHUP")
            # The old workers have stopped accepting; one still reads the upload.
            wait_until(lambda: not listening(worker_pids(server.pid) & old, server.port),
                       "the old workers to close their listening sockets")
            upload_status = upload.finish()
            # The old workers exit once their requests are done.
            wait_until(lambda: not worker_pids(server.pid) & old, "the old workers to exit")
            count = len(traffic.results)
            traffic.wait_for(count + 150)  # served by the new workers
        new = worker_pids(server.pid)

    assert upload_status == 201
    assert len(new) == 2 and not new & old
    failures = traffic.failures()
    assert failures == [], failures[:5]
    after = [(at - reloaded, ready, live) for at, ready, live in probes.samples if at > reloaded]
    assert after and all(ready == 200 and live == 200 for _, ready, live in after), after
    assert traffic.acknowledged_emails() <= stored_emails(app.config["DATABASE_URL"])


def test_a_killed_worker_costs_at_most_its_in_flight_requests(app, admin_email):
    """SIGKILL one of two workers under load: the master replaces it; the only failures are
    requests outstanding on the connections it held when it died (at most one per client, and
    none after), never a 5xx; the metrics still add up."""
    from prometheus_client.parser import text_string_to_metric_families

    threads, clients = 4, 6
    env = {"DATABASE_URL": app.config["DATABASE_URL"], **CHEAP}
    with GunicornServer(env, workers=2, threads=threads) as server:
        token = login(server.url, admin_email)
        with Traffic(server.url, token, threads=clients) as traffic:
            traffic.wait_for(150)
            victim = sorted(worker_pids(server.pid))[0]
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: victim not in worker_pids(server.pid) and len(worker_pids(server.pid)) == 2,
                       "the killed worker replaced")
            answered = len(traffic.results)
            traffic.wait_for(answered + 150)
            traffic.stop()
        wait_until(lambda: capacity(server.url) == 2 * threads, "the replacement to report its capacity")
        families = {
            f.name: f
            for f in text_string_to_metric_families(requests.get(f"{server.url}/metrics", timeout=10).text)
        }

    failures = traffic.failures()
    assert len(failures) <= clients, failures
    assert all(f.status is None for f in failures), failures  # cut off, never a 5xx
    assert all(f.started < killed + 0.5 for f in failures), failures  # nothing fails afterwards
    served = sum(1 for r in traffic.results if r.status is not None) + traffic.setup_requests
    counted = sum(
        s.value
        for s in families["http_server_requests"].samples
        if s.name.endswith("_total") and s.labels["route"].startswith("/api/v1/users")
    )
    assert served <= counted <= served + len(failures)
    assert next(s.value for s in families["http_server_requests_in_flight"].samples) == 0
    assert next(s.value for s in families["http_server_concurrency_limit"].samples) == 2 * threads
