"""The consumer as a real process: SIGKILLed mid-batch, no event lost and none emailed twice;
SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask_migrate import upgrade
from notifier_support import Publisher, SmtpServer, make_event, wait_for
from sqlalchemy import create_engine, text

from app.notifier import create_app
from app.notifier.extensions import MIGRATIONS
from app.platform.messaging import NOTIFIER_DEAD_LETTERS, NOTIFIER_QUEUE

ROOT = Path(__file__).resolve().parents[1]
EVENTS = 30


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.catcher.release.set()
    server.stop()


@pytest.fixture
def notifier_db(new_database: Any) -> str:
    url = str(new_database())  # PostgreSQL and MySQL/MariaDB
    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        upgrade(directory=MIGRATIONS)
    return url


class ConsumerProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.out = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app.notifier:create_app", "notifier", "consume"],
            cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT)
        wait_for(lambda: b"consuming notifier.user-events" in log.read_bytes()
                 or self.process.poll() is not None, timeout=30, what="the consumer to start")
        assert self.process.poll() is None, log.read_text()

    def signal(self, signum: int) -> int:
        os.kill(self.process.pid, signum)
        try:
            return self.process.wait(30)
        finally:
            self.out.close()


def test_sigkill_mid_batch_loses_nothing_and_sends_nothing_twice(notifier_db, amqp_url, smtp, tmp_path):
    publisher = Publisher(amqp_url)
    publisher.purge(NOTIFIER_QUEUE, NOTIFIER_DEAD_LETTERS)
    env = {**os.environ, "LOOKOUT_ENV": "testing", "DATABASE_URL": notifier_db, "BROKER_URL": amqp_url,
           "SMTP_URL": smtp.url, "PREFETCH_COUNT": "10", "RETRY_DELAYS_SECONDS": "0.3",
           "CONSUMER_METRICS_PORT": "0", "OTEL_SDK_DISABLED": "true"}
    smtp.catcher.hold_at = 12  # the 12th email is caught mid-send
    events = [make_event("user.created", user_id=100 + i) for i in range(EVENTS)]
    first = ConsumerProcess(env, tmp_path / "consumer.log")
    for event in events:
        publisher.event(event)
    assert smtp.catcher.held.wait(60), (tmp_path / "consumer.log").read_text()
    assert len(smtp.catcher.messages) == 11
    assert first.signal(signal.SIGKILL) == -signal.SIGKILL
    smtp.catcher.release.set()

    second = ConsumerProcess(env, tmp_path / "consumer.log")
    engine = create_engine(notifier_db)

    def sent() -> int:
        with engine.connect() as conn:
            query = text("SELECT count(*) FROM notifications WHERE state = 'sent'")
            return int(conn.execute(query).scalar_one())

    wait_for(lambda: sent() == EVENTS, timeout=60, what="every event to be sent")
    counts = smtp.catcher.by_message_id()
    assert len(counts) == EVENTS and set(counts.values()) == {1}, counts
    assert sorted(m["To"] for m in smtp.catcher.messages) == sorted(e["data"]["email"] for e in events)
    with engine.connect() as conn:
        states = dict(conn.execute(text("SELECT state, count(*) FROM notifications GROUP BY state")).all())
        caught = conn.execute(text("SELECT attempts FROM notifications WHERE attempts > 1")).scalars().all()
    assert states == {"sent": EVENTS}
    assert caught, "the email caught mid-send was attempted again"
    wait_for(lambda: publisher.count(NOTIFIER_QUEUE) == 0, what="an empty queue")
    assert second.signal(signal.SIGTERM) == 0
    assert b"consumer stopped" in (tmp_path / "consumer.log").read_bytes()
    engine.dispose()
    publisher.close()
