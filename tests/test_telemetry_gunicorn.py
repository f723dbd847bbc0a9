"""Telemetry under a real gunicorn: exact metrics across workers, spans from every worker,
logs and exemplars that point at exported spans, and a collector outage that costs nothing."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import PASSWORD, server_bearer
from otlp import OTLPReceiver
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from app.models import Role
from loadtests.harness import GunicornServer, wait_until

pytestmark = pytest.mark.slow
ROUTE = "/api/v1/users/<int:user_id>"


@pytest.fixture
def database_url(sqlite_url):
    """These tests measure process behaviour, not the database: SQLite only."""
    return sqlite_url


@pytest.fixture
def sqlite_app(app):
    return app


def requests_total(text: str, route: str = ROUTE) -> float:
    return sum(sample.value for family in text_families(text) if family.name == "http_server_requests"
               for sample in family.samples
               if sample.name == "http_server_requests_total" and sample.labels["route"] == route)


def fire(url: str, count: int, headers_for=lambda i: {}) -> list[requests.Response]:
    """Send ``count`` GETs from 8 threads, each on a new connection (so all workers take some)."""
    def one(i: int) -> requests.Response:
        return requests.get(url, headers={"Connection": "close", **headers_for(i)}, timeout=10)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def log_lines(server: GunicornServer) -> list[dict]:
    lines = []
    for raw in server.output().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def access_lines(server: GunicornServer) -> list[dict]:
    return [line for line in log_lines(server) if line.get("logger") == "lookout.access"]


def otlp_env(receiver: OTLPReceiver) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "100"}


def test_four_workers_spans_logs_and_exact_scrapes(sqlite_app, make_user):
    user = make_user()
    auth = server_bearer(user)
    n = 240
    trace_ids = [secrets.token_hex(16) for _ in range(n)]
    with OTLPReceiver() as receiver, GunicornServer(
        {"DATABASE_URL": sqlite_app.config["DATABASE_URL"], **otlp_env(receiver)}, workers=4, threads=2,
    ) as server:
        responses = fire(f"{server.url}/api/v1/users/{user.id}", n, lambda i: {
            **auth, "X-Request-ID": f"req-{i}",
            "traceparent": f"00-{trace_ids[i]}-{secrets.token_hex(8)}-01"})
        assert [r.status_code for r in responses] == [200] * n, responses[0].text

        # Scrapes land on any worker; each merges all workers' files and must see all n.
        scraped = [requests_total(requests.get(f"{server.url}/metrics", timeout=10).text) for _ in range(10)]
        assert scraped == [n] * 10

        receiver.wait_for(lambda s: len(s) >= n)
        # Stopped, each worker has exported what it had and written its last log lines (both
        # on exit): nothing more can arrive, and the log is complete.
        assert server.stop() == 0
        spans = receiver.server_spans()
        lines = log_lines(server)
    access = [line for line in lines if line.get("logger") == "lookout.access" and line["route"] == ROUTE]
    logged = {line["request_id"]: line for line in access}
    # One access line per request: the app's. Gunicorn's own would be a second, unstructured one.
    assert len(access) == n
    assert not [line for line in lines if line.get("logger") == "gunicorn.access"]
    assert len(spans) == n
    assert {s.name for s in spans} == {f"GET {ROUTE}"}
    pids = {s.resource["process.pid"] for s in spans}
    assert len(pids) > 1, f"all spans came from one worker: {pids}"
    assert {s.trace_id for s in spans} == set(trace_ids)

    assert len(logged) == n
    for i, trace_id in enumerate(trace_ids):
        assert logged[f"req-{i}"]["trace_id"] == trace_id, i


def test_exemplar_points_at_an_exported_span(sqlite_app, make_user):
    """One worker with threads (the Kubernetes model): exemplars in the OpenMetrics scrape."""
    user = make_user()
    auth = server_bearer(user)
    with OTLPReceiver() as receiver, GunicornServer(
        {"DATABASE_URL": sqlite_app.config["DATABASE_URL"], **otlp_env(receiver)}, workers=1, threads=4,
    ) as server:
        fire(f"{server.url}/api/v1/users/{user.id}", 20, lambda i: auth)
        scrape = requests.get(f"{server.url}/metrics", headers={"Accept": "application/openmetrics-text"},
                              timeout=10)
        spans = receiver.wait_for(lambda s: len(s) >= 20)
    exemplars = [sample.exemplar.labels["trace_id"]
                 for family in text_string_to_metric_families(scrape.text)
                 if family.name == "http_server_request_duration_seconds"
                 for sample in family.samples if sample.exemplar and sample.labels.get("route") == ROUTE]
    assert exemplars
    assert set(exemplars) <= {s.trace_id for s in spans}


def test_multiprocess_dir_is_emptied_at_start(sqlite_app, tmp_path):
    stale = tmp_path / "metrics"
    stale.mkdir()
    with GunicornServer({"DATABASE_URL": sqlite_app.config["DATABASE_URL"],
                         "PROMETHEUS_MULTIPROC_DIR": str(stale)}, workers=2) as first:
        fire(f"{first.url}/api/v1/users", 30)
    assert list(stale.glob("*.db")), "the first run left its files"
    with GunicornServer({"DATABASE_URL": sqlite_app.config["DATABASE_URL"],
                         "PROMETHEUS_MULTIPROC_DIR": str(stale)}, workers=2) as second:
        fire(f"{second.url}/api/v1/users", 5)
        assert requests_total(requests.get(f"{second.url}/metrics", timeout=10).text, "/api/v1/users") == 5


def test_dead_worker_leaves_counts_and_in_flight_consistent(sqlite_app):
    with GunicornServer({"DATABASE_URL": sqlite_app.config["DATABASE_URL"]}, workers=2) as server:
        fire(f"{server.url}/api/v1/users", 40)
        worker = _worker_pids(server.pid)[0]
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: worker not in _worker_pids(server.pid) and len(_worker_pids(server.pid)) == 2,
                   "the killed worker replaced")

        def sample(text: str, name: str) -> float:
            return next(s.value for f in text_families(text) for s in f.samples if s.name == name)

        # The replacement reports its threads once booted; the dead worker's share is gone.
        wait_until(lambda: sample(requests.get(f"{server.url}/metrics", timeout=10).text,
                                  "http_server_concurrency_limit") == 2 * 4, "the replacement's capacity")
        text = requests.get(f"{server.url}/metrics", timeout=10).text
        assert requests_total(text, "/api/v1/users") == 40  # counters of the dead worker stay
        assert sample(text, "http_server_requests_in_flight") == 0


def test_blackholed_collector_neither_slows_requests_nor_holds_shutdown(sqlite_app):
    """The collector accepts connections and never answers, the worst kind of outage."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(1000)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def swallow() -> None:
        hole.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(hole.accept()[0])
            except OSError:
                continue

    threading.Thread(target=swallow, daemon=True).start()
    graceful = 5
    env = {"DATABASE_URL": sqlite_app.config["DATABASE_URL"], "OTEL_TRACES_SAMPLER": "always_on",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{hole.getsockname()[1]}",
           "OTEL_BSP_SCHEDULE_DELAY": "50", "GUNICORN_GRACEFUL_TIMEOUT": str(graceful)}
    try:
        with GunicornServer(env, workers=1, threads=4) as server:
            slowest = 0.0
            for _ in range(100):
                started = time.monotonic()
                # anonymous: a 401 without the database, traced and exported all the same
                assert requests.get(f"{server.url}/api/v1/users", timeout=10).status_code == 401
                slowest = max(slowest, time.monotonic() - started)
            # An export in the request path would wait for the 5 s export timeout.
            assert slowest < 2, slowest
            assert accepted, "the exporter never tried the collector"
            started = time.monotonic()
            assert server.stop(timeout=graceful + 10) == 0
            assert time.monotonic() - started < graceful
    finally:
        stop.set()
        hole.close()


def _worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def test_login_over_http_counts_users_and_failures(sqlite_app, make_user):
    make_user(Role.ADMIN, email="root@example.com")
    with GunicornServer({"DATABASE_URL": sqlite_app.config["DATABASE_URL"]}, workers=2) as server:
        bad = requests.post(f"{server.url}/api/v1/auth/token", timeout=10,
                            json={"email": "root@example.com", "password": "nope-nope"})
        assert bad.status_code == 401
        token = requests.post(f"{server.url}/api/v1/auth/token", timeout=10,
                              json={"email": "root@example.com", "password": PASSWORD}).json()["access_token"]
        created = requests.post(f"{server.url}/api/v1/users", timeout=10,
                                headers={"Authorization": f"Bearer {token}"},
                                json={"email": "n@example.com", "name": "N", "password": "long-enough"})
        assert created.status_code == 201
        text = requests.get(f"{server.url}/metrics", timeout=10).text
    assert 'lookout_auth_failures_total{reason="credentials"} 1.0' in text
    assert "lookout_users_created_total 1.0" in text
