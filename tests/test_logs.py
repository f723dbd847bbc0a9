"""JSON log lines with request and trace ids; X-Request-ID accepted, generated, echoed."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest

from app.telemetry.logs import logging_config


@pytest.fixture
def log_lines():
    """Route logging through the production JSON config into a buffer; yield a reader."""
    buffer = io.StringIO()
    config = logging_config("DEBUG")
    config["handlers"]["json"]["stream"] = buffer
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logging.config.dictConfig(config)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def access_lines(lines):
    return [line for line in lines if line["logger"] == "lookout.access"]


def test_access_line_fields(traced_app, span_exporter, log_lines):
    response = traced_app.test_client().get("/api/v1/users/12345")
    [line] = access_lines(log_lines())
    assert {"time", "level", "logger", "message", "request_id", "trace_id", "span_id"} <= line.keys()
    assert line["method"] == "GET" and line["route"] == "/api/v1/users/<int:user_id>"
    assert line["status"] == 404 and line["duration_ms"] >= 0 and line["path"] == "/api/v1/users/12345"
    assert line["request_id"] == response.headers["X-Request-ID"]
    server = next(s for s in span_exporter.get_finished_spans() if s.name.startswith("GET"))
    assert line["trace_id"] == format(server.context.trace_id, "032x")
    assert line["span_id"] == format(server.context.span_id, "016x")


def test_request_id_is_accepted_and_echoed(client, log_lines):
    response = client.get("/api/v1/users", headers={"X-Request-ID": "req-42.abc"})
    assert response.headers["X-Request-ID"] == "req-42.abc"
    assert access_lines(log_lines())[0]["request_id"] == "req-42.abc"


@pytest.mark.parametrize("given", ["", "has space", "x" * 129, "a;b", "é"])
def test_unusable_request_id_is_replaced(client, given):
    response = client.get("/api/v1/users", headers={"X-Request-ID": given} if given else {})
    echoed = response.headers["X-Request-ID"]
    assert echoed != given and len(echoed) == 32


def test_app_log_lines_carry_the_request_id(app, client, log_lines, make_user):
    user = make_user()
    client.post("/api/v1/auth/token", json={"email": user.email, "password": "wrong-password"},
                headers={"X-Request-ID": "login-1"})
    refused = next(line for line in log_lines() if "token refused" in line["message"])
    assert refused["request_id"] == "login-1" and refused["level"] == "INFO"


def test_probes_log_at_debug_only(client, log_lines):
    client.get("/livez")
    [line] = access_lines(log_lines())
    assert line["level"] == "DEBUG"


def test_error_traceback_is_in_the_log_line_not_the_response(app, log_lines):
    @app.get("/boom")
    def boom():
        raise ValueError("kaput")

    response = app.test_client().get("/boom")
    assert "kaput" not in response.get_data(as_text=True)
    error = next(line for line in log_lines() if line["level"] == "ERROR")
    assert "ValueError: kaput" in error["exc_info"] and error["request_id"]
