"""Errors gunicorn answers before the app sees the request are problem+json too."""

from __future__ import annotations

import json
import socket

import pytest

from loadtests.harness import GunicornServer

pytestmark = pytest.mark.slow


@pytest.fixture
def database_url(sqlite_url):
    return sqlite_url


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


CASES = {
    "request line too long": (
        b"GET /api/v1/users?page=" + b"9" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
    ),
    "header too large": (b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", 431),
    "not HTTP": (b"NOT HTTP AT ALL\r\n\r\n", 400),
}


def test_server_level_errors_are_problems(app):
    with GunicornServer({"DATABASE_URL": app.config["DATABASE_URL"], "LOG_LEVEL": "ERROR"}) as server:
        answers = {name: raw(server.port, request) for name, (request, _) in CASES.items()}
        # The control case: a long request line within the limit reaches the app, whose problem says
        # the read needs a token (401): gunicorn's own refusals are 400s.
        within = raw(
            server.port,
            b"GET /api/v1/users?page=" + b"9" * 6000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    for name, (status, headers, body) in answers.items():
        assert status == CASES[name][1], name
        assert headers["content-type"] == "application/problem+json", name
        assert headers["x-content-type-options"] == "nosniff"
        problem = json.loads(body)
        assert problem["status"] == status and problem["type"] == "about:blank" and problem["detail"]
    assert within[0] == 401 and within[1]["content-type"] == "application/problem+json"
