"""Rolling restart behind a real load balancer: HAProxy health-checks /readyz of two instances,
each is stopped (SIGTERM) and started again in turn, as a Kubernetes rollout does, under load:
no request fails.

HAProxy is configured without retries or redispatch, so any error an instance gives reaches the
client: the test passes only because each instance turns not-ready and keeps serving until the
balancer has taken it out.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from conftest import service_missing
from prometheus_client.parser import text_string_to_metric_families
from test_shutdown import CHEAP, login, stored_emails
from traffic import Traffic

from app.models import Role
from loadtests.harness import GunicornServer, free_port

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
"""


@pytest.fixture
def database_url(sqlite_url):
    return sqlite_url


class HAProxy:
    def __init__(self, backends: list[int]) -> None:
        binary = shutil.which("haproxy") or (
            "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
        )
        if binary is None:
            service_missing("haproxy is not installed (Debian package haproxy)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = Path(tempfile.mkdtemp(prefix="lookout-haproxy-")) / "haproxy.cfg"
        self.config.write_text(
            HAPROXY_CONFIG.format(interval=CHECK_INTERVAL_MS, a=backends[0], b=backends[1], port=self.port)
        )
        self.process = subprocess.Popen(
            [binary, "-db", "-f", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for_backends(self, healthy: int, timeout: float = 20) -> None:
        """Poll until ``healthy`` backends are up (through the frontend: a request must work)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                self.process.stdout.read().decode() if self.process.stdout else ""
            )
            try:
                if requests.get(f"{self.url}/livez", timeout=2).status_code == 200:
                    time.sleep(CHECK_INTERVAL_MS / 1000 * 3 * healthy)  # rise: two checks per backend
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError("HAProxy has no healthy backend")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.config.parent, ignore_errors=True)


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
    servers = [
        GunicornServer(env, workers=1, threads=4, ready_path="/readyz").start(),
        GunicornServer(env, workers=1, threads=4, ready_path="/readyz").start(),
    ]
    balancer = HAProxy([s.port for s in servers])
    try:
        balancer.wait_for_backends(2)
        token = login(balancer.url, admin)
        with Traffic(balancer.url, token, threads=4) as traffic:
            traffic.wait_for(100)
            for i, old in enumerate(list(servers)):
                assert served(old) > 0, "the balancer never sent this instance traffic"
                assert old.stop(timeout=20) == 0
                servers[i] = GunicornServer(
                    env, workers=1, threads=4, ready_path="/readyz", port=old.port
                ).start()
                answered = len(traffic.results)
                deadline = time.monotonic() + 20
                while served(servers[i]) < 20:  # back in rotation before the next one goes
                    assert time.monotonic() < deadline, "the restarted instance gets no traffic"
                    time.sleep(0.1)
                traffic.wait_for(answered + 50)
            traffic.stop()
    finally:
        balancer.stop()
        for server in servers:
            server.stop()

    failures = traffic.failures()
    assert len(traffic.results) > 300 and failures == [], failures[:5]
    assert traffic.acknowledged_emails() <= stored_emails(app.config["DATABASE_URL"])
