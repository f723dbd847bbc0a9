"""The real gunicorn process: CRUD over HTTP, on SQLite and PostgreSQL, production settings; and
how the harness picks, and when it replaces, the port gunicorn binds."""

from __future__ import annotations

import json
import signal
import socket
from types import SimpleNamespace

import pytest
import requests
from conftest import PASSWORD

from app.models import Role
from loadtests.harness import GunicornServer


@pytest.fixture
def live_server(app, make_user):
    """Gunicorn (2 workers) on the test's migrated database, with an admin to log in as."""
    make_user(Role.ADMIN, email="admin@example.com")
    with GunicornServer({"DATABASE_URL": app.config["DATABASE_URL"]}, workers=2) as server:
        yield server


@pytest.mark.slow
def test_crud_over_http(live_server):
    url = live_server.url
    token = requests.post(f"{url}/api/v1/auth/token",
                          json={"email": "admin@example.com", "password": PASSWORD}, timeout=10)
    assert token.status_code == 200
    auth = {"Authorization": f"Bearer {token.json()['access_token']}"}

    created = requests.post(f"{url}/api/v1/users", headers=auth, timeout=10,
                            json={"email": "Grace@Example.com", "name": "Grace", "password": "cobol-rocks"})
    assert created.status_code == 201
    user = created.json()
    assert requests.get(f"{url}{created.headers['Location']}", headers=auth, timeout=10).json() == user

    listed = requests.get(f"{url}/api/v1/users", headers=auth, timeout=10).json()
    assert [u["email"] for u in listed["items"]] == ["admin@example.com", "grace@example.com"]

    patched = requests.patch(f"{url}/api/v1/users/{user['id']}", headers=auth, json={"name": "Rear Admiral"},
                             timeout=10)
    assert patched.status_code == 200 and patched.json()["name"] == "Rear Admiral"

    assert requests.delete(f"{url}/api/v1/users/{user['id']}", headers=auth, timeout=10).status_code == 204
    gone = requests.get(f"{url}/api/v1/users/{user['id']}", headers=auth, timeout=10)
    assert gone.status_code == 404 and gone.headers["Content-Type"] == "application/problem+json"


@pytest.mark.slow
def test_probes_and_docs_over_http(live_server):
    assert requests.get(f"{live_server.url}/readyz", timeout=10).json()["status"] == "ok"
    docs = requests.get(f"{live_server.url}/docs", timeout=10)
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert requests.get(f"{live_server.url}/openapi.json", timeout=10).json()["openapi"].startswith("3.")


@pytest.mark.slow
def test_sigterm_stops_the_server_cleanly(live_server):
    live_server.process.send_signal(signal.SIGTERM)
    assert live_server.process.wait(timeout=15) == 0


@pytest.mark.slow
def test_start_up_log_holds_only_the_servers_own_lines(live_server):
    """A production start, two workers: every line is JSON from gunicorn or Lookout, none from a
    library announcing itself (alembic registers its plugins at INFO in every worker)."""
    assert requests.get(f"{live_server.url}/livez", timeout=10).status_code == 200
    live_server.stop()
    lines = [json.loads(line) for line in live_server.output().splitlines()]
    assert any(line["message"].startswith("Booting worker") for line in lines)
    foreign = [line for line in lines if not line["logger"].startswith(("gunicorn.", "app.", "lookout."))]
    assert foreign == []


def _freeze_lines(output: str) -> list[dict]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line["message"].startswith("gc.freeze:")]


@pytest.mark.slow
@pytest.mark.parametrize("setting", [None, "false"])
def test_worker_freezes_its_start_up_heap_unless_told_not_to(app, setting):
    """GUNICORN_GC_FREEZE (default true): each worker freezes what it built before serving, and
    the collector's work is on /metrics either way."""
    env = {"DATABASE_URL": app.config["DATABASE_URL"]}
    if setting is not None:
        env["GUNICORN_GC_FREEZE"] = setting
    with GunicornServer(env, workers=1) as server:
        assert requests.get(f"{server.url}/api/v1/users", timeout=10).status_code in (200, 401)
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        server.stop()
        frozen = _freeze_lines(server.output())
    assert 'python_gc_collections_total{generation="2"}' in metrics
    if setting is None:
        assert len(frozen) == 1
        count = int(frozen[0]["message"].split()[1])
        assert count > 10_000, frozen  # the app and its libraries, not a handful of objects
    else:
        assert frozen == []


def test_free_port_never_hands_out_a_port_twice(monkeypatch):
    """The kernel may give two bind(0) calls in a row one port; a server and its metrics port
    chosen that way would collide when gunicorn binds them."""
    from loadtests.harness import processes

    offered = iter([40001, 40001, 40001, 40003])

    class Socket:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def bind(self, address):
            self.port = next(offered)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(processes, "socket", SimpleNamespace(socket=Socket))  # this module's only
    monkeypatch.setattr(processes, "_handed_out", set(), raising=False)
    assert [processes.free_port(), processes.free_port()] == [40001, 40003]


@pytest.fixture
def taken_port():
    """A port that another process's listener holds, as one that bound port 0 after we chose it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("taken", ["port", "metrics_port"])
def test_a_taken_port_of_its_own_choosing_is_replaced(sqlite_url, monkeypatch, taken_port, taken):
    """The server's port is chosen first, its metrics port second; either may be taken."""
    from loadtests.harness import gunicorn as module

    real = module.free_port
    ports = iter([taken_port] if taken == "port" else [real(), taken_port])
    monkeypatch.setattr(module, "free_port", lambda: next(ports, None) or real())
    with GunicornServer({"DATABASE_URL": sqlite_url}, metrics_port=True) as server:
        assert taken_port not in (server.port, server.metrics_port)
        assert server.url.endswith(f":{server.port}")
        assert requests.get(f"{server.url}/livez", timeout=5).status_code == 200
        scrape = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5)
        assert scrape.status_code == 200 and "lookout_build_info" in scrape.text


@pytest.mark.slow
def test_the_metrics_port_answers_metrics_and_nothing_else(sqlite_url):
    """Exposing the metrics port to Prometheus exposes nothing more of the service."""
    with GunicornServer({"DATABASE_URL": sqlite_url}, metrics_port=True) as server:
        metrics_url = f"http://127.0.0.1:{server.metrics_port}"
        assert requests.get(f"{metrics_url}/metrics", timeout=5).status_code == 200
        for path in ("/", "/livez", "/docs", "/openapi.json", "/api/v1/users", "/api/v1/users/1"):
            answer = requests.get(f"{metrics_url}{path}", timeout=5)
            assert answer.status_code == 404, path
            assert answer.headers["Content-Type"] == "application/problem+json"
        token = requests.post(f"{metrics_url}/api/v1/auth/token", timeout=5,
                              json={"email": "nobody@example.com", "password": "irrelevant"})
        assert token.status_code == 404
        assert requests.get(f"{server.url}/metrics", timeout=5).status_code == 404
        assert requests.get(f"{server.url}/livez", timeout=5).status_code == 200


@pytest.mark.slow
def test_a_given_port_stays_even_when_taken(sqlite_url, taken_port):
    """A restart in the same place must not wander off to another port."""
    server = GunicornServer({"DATABASE_URL": sqlite_url}, port=taken_port)
    with pytest.raises(RuntimeError, match=rf"Connection in use: \('127.0.0.1', {taken_port}\)"):
        server.start()
    assert server.port == taken_port
    assert server.process is not None and server.process.poll() is not None
