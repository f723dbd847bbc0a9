"""JSON log lines with request and trace ids; X-Request-ID accepted, generated, echoed."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import bearer

from app.platform.logs import JsonFormatter, logging_config
from loadtests.harness import wait_until


@pytest.fixture
def log_lines():
    """Route logging through the production JSON config into a buffer; yield a reader."""
    buffer = io.StringIO()
    config = logging_config("DEBUG")
    config["handlers"]["json"]["stream"] = buffer
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logging.config.dictConfig(config)

    def read() -> list[dict]:
        for handler in root.handlers:
            handler.flush()  # lines are written by a background thread
        return [json.loads(line) for line in buffer.getvalue().splitlines()]

    yield read
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def access_lines(lines):
    return [line for line in lines if line["logger"] == "lookout.access"]


def test_access_line_fields(traced_app, span_exporter, log_lines, make_user):
    user = make_user()
    response = traced_app.test_client().get("/api/v1/users/12345", headers=bearer(user))
    [line] = access_lines(log_lines())
    assert {"time", "level", "logger", "message", "request_id", "trace_id", "span_id"} <= line.keys()
    assert line["method"] == "GET" and line["route"] == "/api/v1/users/<int:user_id>"
    assert line["status"] == 404 and line["duration_ms"] >= 0 and line["path"] == "/api/v1/users/12345"
    assert line["request_id"] == response.headers["X-Request-ID"]
    server = next(s for s in span_exporter.get_finished_spans() if s.name.startswith("GET"))
    assert line["trace_id"] == format(server.context.trace_id, "032x")
    assert line["span_id"] == format(server.context.span_id, "016x")


def test_time_follows_each_record_across_seconds():
    """The second's text is reused within a second and renewed at the next (and going back)."""
    formatter = JsonFormatter()
    times = [(1_795_000_000, 125), (1_795_000_000, 875), (1_795_000_001, 0), (1_794_999_999, 250)]
    stamps = []
    for second, millis in times:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = second + millis / 1000, millis  # binary-exact fractions
        stamps.append(formatter.formatTime(record))
    assert stamps == [datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"
                      for second, millis in times]


def test_time_is_utc_to_the_millisecond(log_lines):
    before = datetime.now(UTC)
    time.sleep(0.002)  # a line's time is truncated to the millisecond
    logging.getLogger("app.test").info("now")
    [line] = log_lines()
    assert len(line["time"]) == len("2026-11-23T08:35:52.123Z") and line["time"].endswith("Z")
    stamped = datetime.fromisoformat(line["time"])
    assert stamped.utcoffset() == timedelta(0)
    assert before <= stamped <= datetime.now(UTC)


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


# The background writer (BackgroundStreamHandler): order, flush, close, fork, write errors.

def _handler(stream) -> logging.Handler:
    from app.platform.logs import BackgroundStreamHandler

    handler = BackgroundStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)


def test_background_writer_keeps_order_across_threads_and_flush_waits_for_it():
    import threading

    buffer = io.StringIO()
    handler = _handler(buffer)

    def log(thread: int) -> None:
        for i in range(500):
            handler.handle(_record(f"{thread}:{i}"))

    threads = [threading.Thread(target=log, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2000
    for t in range(4):  # each thread's lines in the order it logged them
        assert [line for line in lines if line.startswith(f"{t}:")] == [f"{t}:{i}" for i in range(500)]
    handler.close()


def test_background_writer_stops_on_close_and_writes_what_was_queued():
    buffer = io.StringIO()
    handler = _handler(buffer)
    for i in range(100):
        handler.handle(_record(f"line {i}"))
    writer = handler._writer
    handler.close()
    assert not writer.is_alive()
    assert buffer.getvalue().splitlines()[-1] == "line 99"


def test_background_writer_survives_a_failing_stream(capsys):
    class Flaky(io.StringIO):
        calls = 0

        def write(self, text):
            self.calls += 1
            if self.calls == 1:
                raise OSError("disk full")
            return super().write(text)

    stream = Flaky()
    handler = _handler(stream)
    handler.handle(_record("lost"))
    handler.flush()
    handler.handle(_record("kept"))
    handler.flush()
    assert stream.getvalue() == "kept\n"
    assert "disk full" in capsys.readouterr().err
    handler.close()


# Forking with the writer thread alive is the case under test (gunicorn's master has one when it
# forks workers); Python 3.12+ warns about any fork of a process with threads.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_writes_its_own_lines_once(tmp_path):
    """Gunicorn forks workers from a master that has logged: each process needs its own writer,
    and the child must not write the parent's queued lines again."""
    import os

    path = tmp_path / "out.log"
    with path.open("w", buffering=1) as stream:
        handler = _handler(stream)
        handler.handle(_record("parent before fork"))
        handler.flush()
        pid = os.fork()
        if pid == 0:  # child: log, then leave the way a gunicorn worker does
            handler.handle(_record(f"child {os.getpid()}"))
            handler.close()
            os._exit(0 if handler._writer is None else 1)
        _, status = os.waitpid(pid, 0)
        handler.handle(_record("parent after fork"))
        handler.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert path.read_text().splitlines() == ["parent before fork", f"child {pid}", "parent after fork"]


def test_background_writer_writes_without_being_asked():
    buffer = io.StringIO()
    handler = _handler(buffer)
    handler.handle(_record("soon"))
    wait_until(buffer.getvalue, "the writer thread to write", interval=0.01)
    assert buffer.getvalue() == "soon\n"
    handler.close()


def test_a_backlog_is_written_by_the_logging_thread(monkeypatch):
    """A writer that falls behind never lets the queue grow past QUEUED_LINES."""
    from app.platform import logs

    monkeypatch.setattr(logs, "QUEUED_LINES", 10)
    monkeypatch.setattr(logs, "BATCH_SECONDS", 60)  # the writer waits; only the backlog path writes
    buffer = io.StringIO()
    handler = _handler(buffer)
    for i in range(50):
        handler.handle(_record(f"line {i}"))
    written = buffer.getvalue().splitlines()
    assert len(written) >= 40 and written == [f"line {i}" for i in range(len(written))]
    assert handler._queue.qsize() <= 10
    handler.close()  # cuts the writer's wait short and writes the rest
    assert buffer.getvalue().splitlines() == [f"line {i}" for i in range(50)]
