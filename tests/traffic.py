"""Load and probes for fault tests: bounded in time and request count, 127.0.0.1 only.

Usage:
    with Probes(url) as probes, Traffic(url, token, threads=4) as traffic:
        ...fault...
        traffic.stop()
    assert traffic.failures() == []
    probes.samples   # (when /readyz answered, /readyz status, /livez status); 0 = refused

``Traffic`` keeps connections alive like a real client. With ``follow_readiness`` it also
behaves like a load balancer's backend selection: it polls /readyz every ``check_interval``
seconds and stops sending new requests once it reads 503 (or once the port refuses).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from loadtests.harness import PATIENCE, wait_until

MAX_REQUESTS = 20_000  # per Traffic, whatever the duration
# The longest Traffic and Probes run: beyond several waits of the harness's patience, since a
# test on a busy machine may spend minutes in them; a forgotten one still ends.
MAX_SECONDS = 5 * PATIENCE


@dataclass
class Result:
    kind: str  # "read" or "write"
    started: float
    ended: float
    status: int | None  # None: no HTTP answer
    error: str = ""
    email: str = ""
    content_type: str = ""
    retry_after: str = ""


@dataclass
class Traffic:
    url: str
    token: str  # an admin's: the first user is found through the admin list
    threads: int = 4
    write_every: int = 4  # one write in this many requests
    follow_readiness: bool = False
    check_interval: float = 0.1
    timeout: float = 15.0
    max_seconds: float = MAX_SECONDS
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._count = itertools.count()
        self._workers: list[threading.Thread] = []
        self.started = time.monotonic()
        self.stopped_by_readiness: float | None = None
        self.user_id = self._first_user()

    setup_requests = 1  # the GET /api/v1/users below, not in ``results``

    def _first_user(self) -> int:
        listed = requests.get(f"{self.url}/api/v1/users?per_page=1", timeout=10,
                              headers={"Authorization": f"Bearer {self.token}"}).json()
        return listed["items"][0]["id"]

    def __enter__(self) -> Traffic:
        for n in range(self.threads):
            self._workers.append(threading.Thread(target=self._run, args=(n,), daemon=True))
        if self.follow_readiness:
            self._workers.append(threading.Thread(target=self._watch_readiness, daemon=True))
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 5)

    def wait_for(self, count: int, timeout: float = PATIENCE) -> None:
        """Wait until ``count`` requests have been answered (``timeout``: patience, not a rate)."""
        wait_until(lambda: len(self.results) >= count, f"{count} answered requests", timeout)

    def _watch_readiness(self) -> None:
        while not self._stop.is_set():
            try:
                status = requests.get(
                    f"{self.url}/readyz", timeout=5, headers={"Connection": "close"}
                ).status_code
            except requests.ConnectionError:
                status = 0
            except requests.Timeout:
                status = -1
            if status != 200:
                self.stopped_by_readiness = time.monotonic()
                self._stop.set()
                return
            time.sleep(self.check_interval)

    def _run(self, n: int) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {self.token}"}
        while not self._stop.is_set() and time.monotonic() - self.started < self.max_seconds:
            i = next(self._count)
            if i >= MAX_REQUESTS:
                return
            write = i % self.write_every == 0
            email = f"t{uuid.uuid4().hex[:16]}@example.com" if write else ""
            started = time.monotonic()
            try:
                if write:
                    response = session.post(
                        f"{self.url}/api/v1/users",
                        headers=headers,
                        timeout=self.timeout,
                        json={"email": email, "name": "Load", "password": "long-enough"},
                    )
                else:
                    response = session.get(f"{self.url}/api/v1/users/{self.user_id}", headers=headers,
                                           timeout=self.timeout)
                result = Result(
                    "write" if write else "read",
                    started,
                    time.monotonic(),
                    response.status_code,
                    email=email,
                    content_type=response.headers.get("Content-Type", ""),
                    retry_after=response.headers.get("Retry-After", ""),
                )
            except requests.RequestException as exc:
                result = Result(
                    "write" if write else "read",
                    started,
                    time.monotonic(),
                    None,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    email=email,
                )
            with self._lock:
                self.results.append(result)

    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status is None or r.status >= 400]

    def acknowledged_emails(self) -> set[str]:
        return {r.email for r in self.results if r.kind == "write" and r.status == 201}


class Probes:
    """Poll /readyz and /livez on fresh connections, recording what each answered."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url = url
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def _get(self, path: str) -> int:
        try:
            return requests.get(f"{self.url}{path}", timeout=10, headers={"Connection": "close"}).status_code
        except requests.ConnectionError:
            return 0
        except requests.Timeout:
            return -1

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() - self.started < MAX_SECONDS:
            ready = self._get("/readyz")
            self.samples.append((time.monotonic(), ready, self._get("/livez")))
            time.sleep(self.interval)

    def __enter__(self) -> Probes:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(15)

    def wait_until(self, condition: Any, timeout: float = PATIENCE) -> float:
        """Poll the newest sample until ``condition(readyz, livez)``; return when it held."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            fresh = self.samples[seen:]
            for at, ready, live in fresh:
                if condition(ready, live):
                    return at
            seen += len(fresh)
            time.sleep(0.02)
        raise AssertionError(f"probes never met the condition in {timeout}s: {self.samples[-5:]}")


def worker_pids(master: int) -> set[int]:
    """The gunicorn master's children (Linux /proc)."""
    with open(f"/proc/{master}/task/{master}/children") as children:
        return {int(pid) for pid in children.read().split()}


def listening(pids: set[int], port: int) -> set[int]:
    """Those of ``pids`` that still hold a socket listening on ``port``."""
    holding = set()
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections):
            holding.add(pid)
    return holding


class SlowUpload:
    """A POST whose body arrives in two halves: a request in flight for as long as we like."""

    def __init__(self, url: str, token: str, email: str) -> None:
        import json
        import socket
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.body = json.dumps({"email": email, "name": "Slow", "password": "long-enough"}).encode()
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        head = (
            f"POST /api/v1/users HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.sock.sendall(head + self.body[:10])

    def _server_end(self) -> tuple[int, int] | None:
        """(bytes received and not yet read, socket inode) of the server's end of this
        connection, from Linux's /proc/net/tcp; the inode is 0 until a process accepts it."""
        client, server = self.sock.getsockname()[1], self.sock.getpeername()[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
            if (local, remote) == (server, client):
                return int(fields[4].split(":")[1], 16), int(fields[9])
        return None

    def wait_until_read(self) -> None:
        """Wait until a worker has accepted the connection and read what was sent so far: the
        request is in its hands, waiting for the rest of the body."""
        def read() -> bool:
            end = self._server_end()
            return end is not None and end[1] != 0 and end[0] == 0

        wait_until(read, "a worker reading the upload")

    def finish(self) -> int:
        """Send the rest; return the response's status code."""
        self.sock.sendall(self.body[10:])
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        self.sock.close()
        return int(data.split(b" ", 2)[1])
