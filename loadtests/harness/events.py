"""The user events' side of a local load run: the outbox relay, the notifier's consumer and web
process and an SMTP sink, each a process of its own on 127.0.0.1, started and stopped by PID.

Usage:
    service = LocalService(workdir)
    events = EventPipeline(workdir, broker_url, service)   # sets the service's BROKER_URL
    service.start(); events.start()
    events.settle(service.admin_email)   # start-up's email in; the histogram's baseline taken
    ... load ...
    events.wait_for_emails("user-", n, timeout)   # bounded; then events.metrics_text()
    events.stop()

The relay runs the users service's settings (``flask --app app events relay``), the consumer the
notifier's development settings (its production settings refuse ``smtp+plain://``, and the sink
speaks no TLS) on an SQLite database of its own in the workdir, migrated first. The notifier's
queue is purged at start, so the latency histogram holds this run's events only: give the run
a broker (or a vhost) of its own. Tracing is off in both (``OTEL_SDK_DISABLED``); metrics stay.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pika
import requests

from .gunicorn import ROOT
from .processes import PATIENCE, free_port, launch, stop, wait_until
from .service import LocalService

NOTIFIER_APP = "app.notifier:create_app"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class EventPipeline:
    """Relay, notifier consumer and web, SMTP sink for ``service``; ``stop()`` ends them all."""

    def __init__(self, workdir: Path, broker_url: str, service: LocalService) -> None:
        self.workdir = workdir
        self.broker_url = broker_url
        self.service = service
        service.env["BROKER_URL"] = broker_url
        self.emails_path = workdir / "emails.jsonl"
        self.smtp_port = free_port()
        self.relay_metrics_port = free_port()
        self.consumer_metrics_port = free_port()
        self.notifier_port = free_port()
        self.notifier_metrics_port = free_port()
        notifier_db = workdir / "notifier.db"
        self.notifier_env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
            "LOOKOUT_ENV": "development", "DATABASE_URL": f"sqlite:///{notifier_db.resolve()}",
            "BROKER_URL": broker_url, "SMTP_URL": f"smtp+plain://127.0.0.1:{self.smtp_port}",
            "CONSUMER_METRICS_PORT": str(self.consumer_metrics_port), "CONSUMER_METRICS_ADDRESS": "127.0.0.1",
            "SERVICE_NAME": "lookout-notifier",
            "OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "WARNING"}
        self.processes: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []
        self.baseline: list[tuple[float, float]] = []  # the histogram before the load (settle)

    def start(self, timeout: float = PATIENCE) -> EventPipeline:
        """After the service's start: migrate the notifier's database, purge its queue, start the
        sink, the relay, the consumer and the notifier's web process and wait for each (the web
        process's /readyz); on any failure stop what started."""
        (self.workdir / "notifier.db").unlink(missing_ok=True)
        # The service's address is certain once it has started (a taken port moves it).
        self.notifier_env["JWKS_URL"] = f"{self.service.url}/.well-known/jwks.json"
        self.emails_path.unlink(missing_ok=True)
        try:
            self._flask(NOTIFIER_APP, "db", "upgrade")
            self._purge()
            self._launch("smtp-sink", [sys.executable, "-m", "loadtests.harness.smtp_sink",
                                       "--port", str(self.smtp_port), "--out", str(self.emails_path)],
                         dict(self.notifier_env), self.smtp_port, timeout)
            relay_env = {**self.service.env, "RELAY_POLL_SECONDS": "0.2", "OTEL_SDK_DISABLED": "true",
                         "RELAY_METRICS_PORT": str(self.relay_metrics_port),
                         "RELAY_METRICS_ADDRESS": "127.0.0.1"}
            self._launch("relay", [sys.executable, "-m", "flask", "--app", "app", "events", "relay"],
                         relay_env, self.relay_metrics_port, timeout)
            self._launch("consumer", [sys.executable, "-m", "flask", "--app", NOTIFIER_APP, "notifier",
                                      "consume"], self.notifier_env, self.consumer_metrics_port, timeout)
            # The notifier's web process (the API, /readyz, its HTTP /metrics), as the image runs it:
            # its /readyz answering 200 says its database is at head and the broker answers.
            web_env = {**self.notifier_env, "HOST": "127.0.0.1", "PORT": str(self.notifier_port),
                       "METRICS_PORT": str(self.notifier_metrics_port), "GUNICORN_WORKERS": "1"}
            self._launch("notifier-web", [sys.executable, "-m", "gunicorn", "-c",
                                          "python:app.notifier.gunicorn_conf", "app.notifier.wsgi:app"],
                         web_env, self.notifier_port, timeout)
            wait_until(lambda: self._get(f"{self.notifier_url}/readyz") == 200,
                       "the notifier's /readyz", timeout, 0.2)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def notifier_url(self) -> str:
        return f"http://127.0.0.1:{self.notifier_port}"

    @staticmethod
    def _get(url: str) -> int:
        try:
            return requests.get(url, timeout=5).status_code
        except requests.RequestException:
            return 0

    def _flask(self, app: str, *args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "flask", "--app", app, *args], cwd=ROOT,
                              env=self.notifier_env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args[:2])} ({app}) failed ({done.returncode}):\n"
                               f"{done.stderr[-2000:]}")

    def _purge(self) -> None:
        from app.platform.messaging import NOTIFIER_QUEUE, declare_topology

        connection = pika.BlockingConnection(pika.URLParameters(self.broker_url))
        try:
            channel = connection.channel()
            declare_topology(channel)
            channel.queue_purge(NOTIFIER_QUEUE)
        finally:
            connection.close()

    def _launch(self, name: str, command: list[str], env: dict[str, str], port: int, timeout: float) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        process = launch(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append((name, process, log))

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.output(name)[-3000:]}")
            return _listening(port)

        wait_until(up, f"{name} listening on 127.0.0.1:{port}", timeout, 0.1)

    def output(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def emailed(self, prefix: str = "") -> int:
        """Messages the sink accepted with a recipient whose address starts with ``prefix``."""
        if not self.emails_path.exists():
            return 0
        lines = self.emails_path.read_text().splitlines()
        return sum(1 for line in lines if line.endswith("}")  # a line being written is skipped
                   and any(to.startswith(prefix) for to in json.loads(line)["to"]))

    def metrics_text(self) -> str:
        """The consumer's /metrics (where the event-to-email histogram lives)."""
        answer = requests.get(f"http://127.0.0.1:{self.consumer_metrics_port}/metrics", timeout=10)
        answer.raise_for_status()
        return answer.text

    def settle(self, address: str, timeout: float = PATIENCE) -> None:
        """Wait for the email to ``address`` (the bootstrap admin's welcome, written before the
        relay started) and remember the histogram then as ``baseline``: the load's latency is
        what comes after it, not the start-up's."""
        from loadtests.emails import histogram, total

        def arrived() -> bool:
            return self.emailed(address) >= 1 and total(histogram(self.metrics_text())) >= self.emailed()

        wait_until(arrived, f"the email to {address}", timeout, 0.2)
        self.baseline = histogram(self.metrics_text())

    def wait_for_emails(self, prefix: str, expected: int, timeout: float) -> float:
        """Wait until ``expected`` emails to ``prefix`` addresses arrived and the consumer's
        histogram counted every email the sink received; return the seconds waited (the bound
        reached: the caller reports what is missing)."""
        from loadtests.emails import histogram, total

        started = time.monotonic()

        def arrived() -> bool:
            return (self.emailed(prefix) >= expected
                    and total(histogram(self.metrics_text())) >= self.emailed())

        try:
            wait_until(arrived, f"{expected} welcome emails", timeout, 0.2)
        except TimeoutError:
            pass
        return time.monotonic() - started

    def stop(self, timeout: float = 20) -> None:
        """Stop the notifier, the relay and the sink by PID (the reverse of their start)."""
        for _name, process, log in reversed(self.processes):
            try:
                stop(process, timeout)
            finally:
                log.close()
        self.processes.clear()

    def __enter__(self) -> EventPipeline:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
