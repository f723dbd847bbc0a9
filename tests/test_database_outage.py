"""Database outages under load, against a PostgreSQL cluster or a MariaDB server this test starts
itself (the same test for each).

Two faults, one after the other, each followed by recovery without restarting the service:
- a cut: a proxy between the service and PostgreSQL stops passing bytes (the peer accepts and
  never answers, which neither statement_timeout nor TCP timeouts end);
- a crash: ``pg_ctl stop -m immediate`` (MariaDB: SIGKILL), then a start with WAL (redo log)
  replay.

During each: /readyz is 503 within 2 s, every API call is answered 200/201 or a 503 problem with
Retry-After within the configured bound, /livez stays 200. After both: every write that was
acknowledged with 201 is in the database.
"""

from __future__ import annotations

import time

import pytest
from conftest import SERVER_PARAMS, add_admin, migrate, service_missing
from faults import MariaDBServer, PostgresCluster, TCPProxy, mariadb_binaries, postgres_bindir
from sqlalchemy import create_engine, text
from test_shutdown import login
from traffic import Probes, Traffic, worker_pids

from app.platform.settings import database_url
from loadtests.harness import GunicornServer

pytestmark = pytest.mark.slow
CONNECT_TIMEOUT, READ_TIMEOUT = 2, 2.0
# The longest an API call may take in an outage: a pre-ping that gets no answer, then a
# reconnection attempt that times out; plus scheduling slack on a shared machine.
API_BOUND = READ_TIMEOUT + CONNECT_TIMEOUT + 1.5
OUTAGE_SECONDS = 6


@pytest.fixture(params=SERVER_PARAMS)
def cluster(request: pytest.FixtureRequest):
    if request.param == "postgresql":
        bindir = postgres_bindir()
        if bindir is None:
            service_missing("PostgreSQL server binaries (initdb, pg_ctl) not found; set PG_BINDIR")
        server = PostgresCluster(bindir)
    else:
        binaries = mariadb_binaries()
        if binaries is None:
            service_missing("MariaDB server binaries (mariadbd, mariadb-install-db) not found")
        server = MariaDBServer(binaries)
    with server as db:
        db.create_database("lookout")
        migrate(db.url("lookout"))
        add_admin(db.url("lookout"))
        yield db


def check_outage(traffic: Traffic, probes: Probes, began: float, ended: float) -> None:
    """What the service answered between ``began`` and ``ended``."""
    readiness = [(round(at - began, 2), ready) for at, ready, _ in probes.samples if began <= at < ended]
    first_503 = next(at for at, ready in readiness if ready == 503)
    assert first_503 < 2.0, readiness
    assert all(ready == 503 for at, ready in readiness if at >= first_503), readiness
    during = [r for r in traffic.results if began < r.started and r.ended < ended]
    assert during, "no API call was made during the outage"
    assert all(r.status == 503 for r in during), [r for r in during if r.status != 503][:5]


def test_database_cut_and_crash_answer_503_and_recover_without_restart(cluster):
    proxy = TCPProxy(cluster.port)
    env = {
        "DATABASE_URL": cluster.url("lookout", port=proxy.port),
        "DATABASE_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "DATABASE_READ_TIMEOUT": str(READ_TIMEOUT),
        "DATABASE_STATEMENT_TIMEOUT_MS": "1500",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8",
        "RATE_LIMIT_WRITES": "100000 per minute",
        "RATE_LIMIT_READS": "100000 per minute",  # Traffic reads with one token
        "LOG_LEVEL": "ERROR",
    }
    with proxy, GunicornServer(env, workers=1, threads=4, ready_path="/readyz") as server:
        workers = worker_pids(server.pid)
        token = login(server.url, "admin@example.com")
        with (
            Probes(server.url, interval=0.1) as probes,
            Traffic(server.url, token, threads=3, write_every=2, timeout=30) as traffic,
        ):
            traffic.wait_for(60)

            cut = time.monotonic()
            proxy.cut()
            time.sleep(OUTAGE_SECONDS)
            restored = time.monotonic()
            proxy.restore()
            recovered = probes.wait_until(lambda ready, live: ready == 200)
            healthy = len(traffic.results)
            traffic.wait_for(healthy + 30)

            cluster.stop("immediate")
            crashed = time.monotonic()  # pg_ctl returns once the server is gone
            time.sleep(OUTAGE_SECONDS)
            restarted = time.monotonic()
            cluster.start()
            probes.wait_until(lambda ready, live: ready == 200)
            healthy = len(traffic.results)
            traffic.wait_for(healthy + 30)
            traffic.stop()
        assert worker_pids(server.pid) == workers, "the service restarted"

    check_outage(traffic, probes, cut, restored)
    check_outage(traffic, probes, crashed, restarted)
    assert recovered - restored < 10
    assert all(live == 200 for _, _, live in probes.samples), "/livez failed during an outage"

    answered = traffic.results
    assert all(r.status in (200, 201, 503) for r in answered), {r.status for r in answered}
    refused = [r for r in answered if r.status == 503]
    assert refused and all(r.content_type == "application/problem+json" and r.retry_after for r in refused)
    assert max(r.ended - r.started for r in answered) < API_BOUND, "an API call hung past the bound"
    assert sum(r.status == 201 for r in answered) >= 30
    engine = create_engine(database_url(cluster.url("lookout")))
    with engine.connect() as conn:
        stored = {row[0] for row in conn.execute(text("SELECT email FROM users"))}
    engine.dispose()
    assert traffic.acknowledged_emails() <= stored, traffic.acknowledged_emails() - stored
