"""Deliberately broken HTTP services on 127.0.0.1, to prove the load-test gate fails.

Usage:
    with FailingServer() as url: ...                 # every request: 503 problem+json
    with SlowProxy(upstream_url, delay=0.3) as url: ...  # the real service, each answer late

Both run in a thread of the test process on a free port and stop on exit.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class _Server:
    handler: type[BaseHTTPRequestHandler]

    def __enter__(self) -> str:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real service

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.handle_any()

    do_POST = do_PATCH = do_DELETE = do_GET

    def handle_any(self) -> None:
        raise NotImplementedError


class FailingServer(_Server):
    """Answers every request with 503 problem+json: a service whose database is gone."""

    class handler(_Handler):
        def handle_any(self) -> None:
            self.body()
            problem = {"type": "about:blank", "title": "Service Unavailable", "status": 503,
                       "detail": "The database is unavailable; retry later.", "instance": self.path}
            self.reply(503, [("Content-Type", "application/problem+json")], json.dumps(problem).encode())


class SlowProxy(_Server):
    """Forwards to ``upstream`` and answers ``delay`` seconds late: correct but slow."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream, self.delay = urlsplit(upstream), delay

    class handler(_Handler):
        def handle_any(self) -> None:
            owner: SlowProxy = self.server.owner  # type: ignore[attr-defined]
            body = self.body()
            time.sleep(owner.delay)
            upstream = http.client.HTTPConnection(owner.upstream.hostname, owner.upstream.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                answer = upstream.getresponse()
                self.reply(answer.status, answer.getheaders(), answer.read())
            finally:
                upstream.close()


class RecordingProxy(SlowProxy):
    """Forwards to ``upstream`` at once and records each request as (method, path, has a token)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, delay=0.0)
        self.requests: list[tuple[str, str, bool]] = []

    class handler(SlowProxy.handler):
        def handle_any(self) -> None:
            owner: RecordingProxy = self.server.owner  # type: ignore[attr-defined]
            owner.requests.append((self.command, self.path, "Authorization" in self.headers))
            super().handle_any()


class FailingReadsProxy(SlowProxy):
    """Forwards to ``upstream`` but answers 503 problem+json to every read of one user
    (``GET /api/v1/users/<anything>``): logins, lists and writes work, so a load test gets past
    its set-up and its personas meet the failures."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, delay=0.0)

    class handler(SlowProxy.handler):
        def handle_any(self) -> None:
            if self.command == "GET" and self.path.startswith("/api/v1/users/"):
                self.body()
                problem = {"type": "about:blank", "title": "Service Unavailable", "status": 503,
                           "detail": "The database is unavailable; retry later.", "instance": self.path}
                self.reply(503, [("Content-Type", "application/problem+json")], json.dumps(problem).encode())
                return
            super().handle_any()
