"""Gunicorn's gthread worker with a drain phase, so a shutdown drops no request.

Plain gthread stops accepting the moment SIGTERM arrives. A load balancer that has not yet
noticed then sends new connections to a closed port (or into a backlog that is reset), and
/readyz can no longer say 503 because nothing answers it. This worker, on SIGTERM:

1. reports not ready (/readyz 503, /livez still 200) and answers every request with
   ``Connection: close``, so kept-alive clients reconnect and land on another instance;
2. keeps accepting and serving for GUNICORN_DRAIN_SECONDS, long enough for the load balancer's
   health checks to take it out;
3. then stops as gthread does, except that it closes its listening sockets at once (a late
   client is refused rather than left in a backlog): in-flight requests finish (the master
   allows GUNICORN_GRACEFUL_TIMEOUT from its SIGTERM for all of it), kept-alive connections are
   answered with ``Connection: close`` for a last moment, and the process exits.

Errors gunicorn answers itself, before the app sees the request (a request line over
limit_request_line is 414, oversized headers 431, malformed HTTP 400), are written as RFC 9457
problems like every other error, instead of gunicorn's HTML page.

A reload (SIGHUP) also sends SIGTERM to the old workers, but there the master keeps the listening
socket and new workers take over, so the old ones skip the drain and stay "ready". The master
tells them apart through ``on_reload`` (app/gunicorn_conf.py), which records here, before any old
worker is signalled, the age of the newest worker being replaced.
"""

from __future__ import annotations

import json
import mmap
import struct
import threading
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

# Anonymous shared memory, mapped in the master before the first fork, so every worker reads
# what the master writes after forking it. One signed 64-bit integer: a worker age.
_REPLACED_UP_TO = mmap.mmap(-1, 8)


def mark_reload(newest_replaced_age: int) -> None:
    """Master side: workers up to this age are being replaced by a reload, not shut down."""
    struct.pack_into("q", _REPLACED_UP_TO, 0, newest_replaced_age)


def replaced_by_reload(age: int) -> bool:
    return age <= struct.unpack_from("q", _REPLACED_UP_TO, 0)[0]


SERVER_ERROR_DETAILS = {
    400: "The request is not valid HTTP.",
    414: "The request line (method, path and query) is longer than the server accepts.",
    431: "The request headers are larger than the server accepts.",
    500: "An unexpected error occurred; it has been logged.",
}


class _ErrorPage:
    """The client socket, except that what gunicorn writes to it is kept instead of sent."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def problem_response(page: bytes) -> bytes:
    """Rewrite gunicorn's HTML error response as an application/problem+json one."""
    status = int(page.split(b" ", 2)[1])
    body = json.dumps({
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": SERVER_ERROR_DETAILS.get(status, HTTPStatus(status).phrase),
        "instance": "",  # the request could not be read, so its path is unknown
    }).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nConnection: close\r\n"
            f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n"
            "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n\r\n")
    return head.encode("latin-1") + body


class LookoutWorker(ThreadWorker):
    """gthread, plus the drain phase and the problem+json server errors described above."""

    drain_seconds: float = 5.0  # set from GUNICORN_DRAIN_SECONDS by app/gunicorn_conf.py

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.draining = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.draining or not self.alive:
            return
        self.draining = True
        app = getattr(self, "wsgi", None)  # None while the worker is still booting: nothing to drain
        if app is None or replaced_by_reload(self.age) or self.drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        self.log.info("Worker %s draining for %ss before it stops", self.pid, self.drain_seconds)
        if getattr(app, "extensions", None) is not None:
            from app.platform.health import begin_shutdown

            begin_shutdown(app)
        # ThreadWorker.handle_exit only flips a flag and wakes the poller: safe from a thread.
        stop = threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame))
        stop.daemon = True
        stop.start()

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            # Stopping: close the listeners now rather than after the last in-flight request, so
            # a late client is refused at once (and retried elsewhere) instead of waiting in a
            # backlog nobody accepts from. Closing again at exit is a no-op.
            for listener in self.sockets:
                listener.close()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        # gunicorn decides the status, logs and writes the access line; only the page changes.
        page = _ErrorPage(client)
        super().handle_error(req, page, addr, exc)
        if page.sent:
            try:
                util.write_nonblock(client, problem_response(page.sent))
            except OSError:
                self.log.debug("Failed to send error message.")

    def handle_request(self, req: Any, conn: Any) -> bool:
        if self.draining:
            req.must_close = True  # the response says "Connection: close"; the client reconnects
        return super().handle_request(req, conn)
