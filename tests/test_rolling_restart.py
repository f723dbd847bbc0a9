"""Rolling restart behind a real load balancer: HAProxy health-checks /readyz of two instances,
each is stopped (SIGTERM) and started again in turn, as a Kubernetes rollout does, under load:
no request fails.

HAProxy is configured without retries or redispatch, so any error an instance gives reaches the
client: the test passes only because each instance turns not-ready and keeps serving until the
balancer has taken it out.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import service_missing
from prometheus_client.parser import text_string_to_metric_families
from test_shutdown import CHEAP, login, stored_emails
from traffic import Traffic

from app.models import Role
from loadtests.harness import GunicornServer, free_port, launch, stop, wait_until

pytestmark = pytest.mark.slow
CHECK_INTERVAL_MS = 200
HAPROXY_CONFIG = """
global
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout check 2s
    timeout client 30s
    timeout server 30s
    retries 0
backend lookout
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {interval}ms fall 2 rise 2
    server a 127.0.0.1:{a} check
    server b 127.0.0.1:{b} check
frontend web
    bind 127.0.0.1:{port}
    default_backend lookout
frontend stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats
"""


@pytest.fixture
def database_url(sqlite_url):
    return sqlite_url


class HAProxy:
    """HAProxy in front of two backends, with its stats page on a port of its own."""

    def __init__(self, backends: list[int]) -> None:
        binary = shutil.which("haproxy") or (
            "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
        )
        if binary is None:
            service_missing("haproxy is not installed (Debian package haproxy)")
        self.binary = binary
        self.port, self.stats_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="lookout-haproxy-"))
        (self.dir / "haproxy.cfg").write_text(HAPROXY_CONFIG.format(
            interval=CHECK_INTERVAL_MS, a=backends[0], b=backends[1], port=self.port, stats=self.stats_port))
        self.log = self.dir / "haproxy.log"
        self.process: Any = None

    def __enter__(self) -> HAProxy:
        with self.log.open("wb") as log:
            self.process = launch([self.binary, "-db", "-f", str(self.dir / "haproxy.cfg")],
                                  stdout=log, stderr=log)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None:
            stop(self.process, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def backends_up(self) -> set[str]:
        """The backends HAProxy's health checks have put in rotation (its stats page)."""
        assert self.process.poll() is None, self.log.read_text()
        try:
            page = requests.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text
        except requests.RequestException:  # not listening yet
            return set()
        rows = csv.DictReader(page.lstrip("# ").splitlines())
        return {row["svname"] for row in rows  # type 2: a server, not the backend's own row
                if row["pxname"] == "lookout" and row["type"] == "2" and row["status"] == "UP"}

    def wait_for_backends(self, *names: str) -> None:
        """Wait until exactly these backends are in rotation."""
        wait_until(lambda: self.backends_up() == set(names), f"HAProxy backends {names} up")


def served(server: GunicornServer) -> float:
    """API requests this instance answered (its own /metrics)."""
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "http_server_requests"
        for s in f.samples
        if s.name.endswith("_total") and s.labels["route"].startswith("/api/")
    )


def test_rolling_restart_behind_haproxy_fails_no_request(app, make_user):
    admin = make_user(Role.ADMIN, email="admin@example.com").email
    env = {
        "DATABASE_URL": app.config["DATABASE_URL"],
        **CHEAP,
        "GUNICORN_DRAIN_SECONDS": "2",
        "GUNICORN_GRACEFUL_TIMEOUT": "12",
    }
    with ExitStack() as running:  # whatever happens, every server and the balancer are stopped
        servers = [running.enter_context(GunicornServer(env, workers=1, threads=4, ready_path="/readyz"))
                   for _ in range(2)]
        balancer = running.enter_context(HAProxy([s.port for s in servers]))
        balancer.wait_for_backends("a", "b")
        token = login(balancer.url, admin)
        with Traffic(balancer.url, token, threads=4) as traffic:
            traffic.wait_for(100)
            for i, old in enumerate(list(servers)):
                assert served(old) > 0, "the balancer never sent this instance traffic"
                assert old.stop(timeout=20) == 0
                servers[i] = running.enter_context(
                    GunicornServer(env, workers=1, threads=4, ready_path="/readyz", port=old.port))
                answered = len(traffic.results)
                # Back in rotation before the next one goes.
                wait_until(lambda: served(servers[i]) >= 20, "traffic to the restarted instance")  # noqa: B023
                traffic.wait_for(answered + 50)
            traffic.stop()

    failures = traffic.failures()
    assert len(traffic.results) > 300 and failures == [], failures[:5]
    assert traffic.acknowledged_emails() <= stored_emails(app.config["DATABASE_URL"])
