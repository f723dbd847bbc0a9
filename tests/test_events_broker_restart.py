"""The whole path across a broker outage, every part a real process: users are created through
gunicorn without pause while a private rabbitmq-server is stopped and started again; afterwards
every created user has had exactly one welcome email (the outbox kept the events, the relay and
the notifier's consumer reconnected by themselves)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import PASSWORD, add_admin, migrate
from flask_migrate import upgrade
from notifier_support import SmtpServer, wait_for
from test_events_e2e import Process
from test_relay_broker_restart import rabbit  # noqa: F401  # the private broker fixture

from app.notifier import create_app as create_notifier
from app.notifier.extensions import MIGRATIONS
from loadtests.harness import GunicornServer

pytestmark = pytest.mark.slow


class Writer:
    """Creates users one after another on a thread; remembers the addresses the API accepted."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.created: list[str] = []
        self.failed = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        session = requests.Session()
        while not self.stopped.is_set():
            n += 1
            email = f"w{n}@example.com"
            answer = session.post(f"{self.url}/api/v1/users", timeout=10,
                                  headers={"Authorization": f"Bearer {self.token}"},
                                  json={"email": email, "name": f"W{n}",
                                        "password": "a long enough password"})
            if answer.status_code == 201:
                self.created.append(email)
            else:
                self.failed += 1

    def wait_for_more(self, count: int) -> None:
        target = len(self.created) + count
        wait_for(lambda: len(self.created) >= target, timeout=60, what=f"{count} more users")


def test_every_change_is_emailed_once_across_a_broker_restart(rabbit, new_database: Any,  # noqa: F811
                                                              tmp_path: Path):
    users_db, notifier_db = new_database(), new_database()  # PostgreSQL, then MySQL/MariaDB
    migrate(users_db)
    add_admin(users_db)
    with create_notifier({"DATABASE_URL": notifier_db}).app_context():
        upgrade(directory=MIGRATIONS)
    smtp = SmtpServer()
    smtp.start()
    base = {**os.environ, "LOOKOUT_ENV": "testing", "OTEL_SDK_DISABLED": "true", "BROKER_URL": rabbit.url}
    processes: list[Process] = []
    try:
        api_env = {"LOOKOUT_ENV": "testing", "DATABASE_URL": users_db, "RATE_LIMIT_ENABLED": "false"}
        with GunicornServer(api_env, threads=4) as api:
            processes.append(Process(["--app", "app", "events", "relay"],
                                     {**base, "DATABASE_URL": users_db, "RELAY_POLL_SECONDS": "0.2"},
                                     tmp_path / "relay.log", b"relay"))
            processes.append(Process(["--app", "app.notifier:create_app", "notifier", "consume"],
                                     {**base, "DATABASE_URL": notifier_db, "SMTP_URL": smtp.url,
                                      "CONSUMER_METRICS_PORT": "0"},
                                     tmp_path / "consumer.log", b"consuming notifier.user-events"))
            token = requests.post(f"{api.url}/api/v1/auth/token", timeout=10, json={
                "email": "admin@example.com", "password": PASSWORD}).json()["access_token"]
            writer = Writer(api.url, token)
            writer.thread.start()
            writer.wait_for_more(10)
            wait_for(lambda: len(smtp.catcher.messages) >= 5, timeout=60, what="emails before the outage")
            rabbit.stop()
            writer.wait_for_more(20)  # the API keeps answering writes; the events wait in the outbox
            rabbit.start()
            writer.wait_for_more(10)
            writer.stopped.set()
            writer.thread.join(30)
            created = list(writer.created)
            wait_for(lambda: len(smtp.catcher.messages) >= len(created), timeout=120,
                     what=f"{len(created)} welcome emails")
            received = Counter(m["To"] for m in smtp.catcher.messages)
            assert set(received) == set(created) and set(received.values()) == {1}, received
            assert writer.failed == 0
    finally:
        for process in processes:
            process.stop()
        smtp.stop()
