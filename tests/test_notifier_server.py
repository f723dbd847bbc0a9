"""The notifier's web process under gunicorn: ready once its database and the broker answer, JSON
log lines with trace ids, a bad setting stops it at start naming the setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from flask_migrate import upgrade
from notifier_support import SmtpServer, wait_for

from app.notifier import create_app
from app.notifier.extensions import MIGRATIONS
from loadtests.harness import GunicornServer

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "gunicorn", "-c", "python:app.notifier.gunicorn_conf",
           "app.notifier.wsgi:app"]


def notifier_server(env: dict[str, str]) -> GunicornServer:
    server = GunicornServer({"LOOKOUT_ENV": "testing", "OTEL_TRACES_SAMPLER": "always_on", **env})
    server.command = COMMAND[2:]  # the harness runs gunicorn with this interpreter
    return server


def test_ready_with_database_and_broker_and_logs_in_json(new_database: Any, amqp_url: str):
    url = new_database()
    smtp = SmtpServer()
    with create_app({"DATABASE_URL": url}).app_context():
        upgrade(directory=MIGRATIONS)
    with notifier_server({"DATABASE_URL": url, "BROKER_URL": amqp_url, "SMTP_URL": smtp.url}) as server:
        ready = requests.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        assert requests.get(f"{server.url}/api/v1/notifications", timeout=10).status_code == 401
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        assert "lookout_notifier_event_to_email_seconds_bucket" in metrics

        def access_line() -> dict[str, Any] | None:
            lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
            return next((line for line in lines if line.get("logger") == "lookout.access"
                         and line.get("path") == "/api/v1/notifications"), None)

        line = wait_for(access_line, what="the access line")
        assert line["status"] == 401 and len(line["trace_id"]) == 32


def test_not_ready_without_the_broker(tmp_path):
    url = f"sqlite:///{tmp_path / 'n.db'}"
    with create_app({"DATABASE_URL": url}).app_context():
        upgrade(directory=MIGRATIONS)
    closed = "amqp://guest:guest@127.0.0.1:1/%2F"
    home = tmp_path / "home"
    home.mkdir()
    with notifier_server({"DATABASE_URL": url, "BROKER_URL": closed, "HOME": str(home),
                          "GUNICORN_THREADS": "3"}) as server:
        answer = requests.get(f"{server.url}/readyz", timeout=10)
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        requests.get(f"{server.url}/api/v1/notifications", timeout=10)
        wait_for(lambda: '"path":"/api/v1/notifications"' in server.output().replace(" ", ""),
                 what="the app's access line")
        output = server.output()
    assert answer.status_code == 503
    assert answer.json()["checks"] == {"database": "ok", "broker": "failing"}
    # One access line per request, the app's: gunicorn's own would be a second.
    assert '"logger":"gunicorn.access"' not in output.replace(" ", "")
    assert list(home.iterdir()) == [], "gunicorn's control socket under $HOME (a read-only root filesystem)"
    # The saturation gauge's denominator is the worker's threads, as the users service reports it.
    assert "\nhttp_server_concurrency_limit 3.0\n" in metrics


@pytest.mark.parametrize("setting, named", [
    ({"SMTP_URL": "smtp://"}, "SMTP_URL: needs a host"),
    ({"GUNICORN_WORKERS": "lots"}, "GUNICORN_WORKERS: Input should be a valid integer"),
    ({"PORT": "0"}, "PORT: Input should be greater than or equal to 1"),
    ({"GUNICORN_GRACEFUL_TIMEOUT": "1"}, "GUNICORN_GRACEFUL_TIMEOUT: Input should be greater than 2"),
])
def test_a_bad_setting_stops_the_server_naming_it(setting, named):
    result = subprocess.run(COMMAND, cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "LOOKOUT_ENV": "testing", **setting})
    assert result.returncode != 0
    assert named in result.stderr and "Traceback" not in result.stderr, result.stderr
