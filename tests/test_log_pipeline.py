"""The log collector's operators, as the program renders them, parse a real line of the app.

A real gunicorn (loadtests/harness) serves a traced request; its JSON access line is wrapped as the
CRI line kubelet writes and fed to the rendered operators through tests/log_pipeline.py, which
checks our configuration against the operators' documented semantics (the collector binary is not
installable here). The kind e2e workflow runs the real collector and Loki and finds a request's
line in Loki by its trace id (infra/delivery/e2e.py).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import requests
from conftest import _migrated_url
from log_pipeline import Record, run
from otlp import OTLPReceiver

from infra.components.monitoring_values import LOG_FIELDS, LOG_LABELS
from infra.mockrun import render
from loadtests.harness import GunicornServer, wait_until

pytestmark = pytest.mark.slow  # starts gunicorn
POD_LOG = ("/var/log/pods/lookout_lookout-server-7c9f8d6b5-x2k4q_0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
           "/app/0.log")


@pytest.fixture(scope="module")
def operators() -> list[dict[str, Any]]:
    collector = next(r for r in render("dev").releases if r["name"] == "otel-logs")["values"]
    return collector["alternateConfig"]["receivers"]["filelog"]["operators"]


@pytest.fixture(scope="module")
def app_line(request: pytest.FixtureRequest) -> str:
    """One JSON access line the real app wrote for a traced request (read once it is flushed)."""
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    with OTLPReceiver() as receiver, GunicornServer({
        "DATABASE_URL": _migrated_url(request, "sqlite"),  # the output is tested, not the database
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }) as server:
        response = requests.get(f"{server.url}/api/v1/users/987654", timeout=10, headers={
            "traceparent": f"00-{trace_id}-{parent}-01", "X-Request-ID": "req-logs-1"})
        assert response.status_code == 401  # anonymous: refused, and logged like any request

        def written() -> str | None:
            for raw in server.output().splitlines():
                if '"req-logs-1"' in raw and '"lookout.access"' in raw:
                    return raw
            return None

        line = wait_until(written, "the access line in gunicorn's output")
    assert json.loads(line)["trace_id"] == trace_id
    return line


def cri(content: str, tag: str = "F", stream: str = "stdout") -> str:
    return f"2026-12-02T01:02:03.123456789Z {stream} {tag} {content}"


def test_a_real_app_line_becomes_a_record_with_its_fields_trace_context_and_severity(operators, app_line):
    fields = json.loads(app_line)
    [record] = run(operators, [cri(app_line)], POD_LOG)
    assert record.body == fields["message"]  # the message is the line Grafana shows
    for name in LOG_FIELDS:
        assert record.attributes[name] == fields[name], name
    assert record.trace_id == bytes.fromhex(fields["trace_id"])
    assert record.span_id == bytes.fromhex(fields["span_id"])
    assert (record.severity, record.severity_text) == (9, fields["level"]) == (9, "INFO")
    assert "time" not in record.attributes and record.timestamp is not None
    assert record.resource == {
        "k8s.namespace.name": "lookout", "k8s.pod.name": "lookout-server-7c9f8d6b5-x2k4q",
        "k8s.pod.uid": "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b", "k8s.container.name": "app",
        "k8s.container.restart_count": "0"}
    # Labels come from resource attributes (and level, which groupbyattrs lifts): no ids among them.
    assert not set(LOG_LABELS) & {"trace_id", "span_id", "request_id", "k8s.pod.name", "k8s.pod.uid"}


def test_a_line_split_by_kubelet_is_joined_before_parsing(operators, app_line):
    """kubelet splits lines over 16 KiB into P(artial) pieces ending with an F piece."""
    fields = json.loads(app_line)
    long_line = json.dumps({**fields, "message": "x" * 40_000})
    pieces = [long_line[i:i + 16_384] for i in range(0, len(long_line), 16_384)]
    lines = [cri(piece, "P") for piece in pieces[:-1]] + [cri(pieces[-1], "F")]
    assert len(lines) == 3
    [record] = run(operators, lines, POD_LOG)
    assert record.body == "x" * 40_000 and record.trace_id == bytes.fromhex(fields["trace_id"])


@pytest.mark.parametrize(("level", "severity"), [("WARNING", 13), ("ERROR", 17), ("CRITICAL", 21),
                                                 ("DEBUG", 5)])
def test_python_levels_map_to_otel_severities(operators, app_line, level, severity):
    [record] = run(operators, [cri(json.dumps({**json.loads(app_line), "level": level}))], POD_LOG)
    assert (record.severity, record.severity_text, record.attributes["level"]) == (severity, level, level)


def test_other_containers_plain_lines_pass_unchanged(operators):
    [record] = run(operators, [cri("level=info msg=\"compacting\"", stream="stderr")], POD_LOG)
    assert record.body == 'level=info msg="compacting"'
    assert record.trace_id is None and record.severity is None
    assert record.attributes == {"log.file.path": POD_LOG, "log.iostream": "stderr", "logtag": "F"}


def test_a_bad_trace_id_leaves_the_record_without_trace_context(operators, app_line):
    [record] = run(operators, [cri(json.dumps({**json.loads(app_line), "trace_id": "not-hex"}))], POD_LOG)
    assert record.trace_id is None and record.attributes["trace_id"] == "not-hex"
    assert record.severity == 9  # the later operators still ran


def test_the_interpreter_refuses_what_it_was_not_taught(operators):
    with pytest.raises(ValueError, match="regex_parser"):
        run([*operators, {"type": "regex_parser", "regex": "(?P<x>.*)"}], [cri("{}")], POD_LOG)
    with pytest.raises(ValueError, match="timestamp"):
        run([{**operators[0]}, {**operators[1], "timestamp": {"parse_from": "attributes.time"}}],
            [cri("{}")], POD_LOG)


def test_the_checks_can_fail(operators, app_line):
    """Without the trace parser the record has no trace context: the assertion above would fail."""
    without = [op for op in operators if op["type"] != "trace_parser"]
    [record] = run(without, [cri(app_line)], POD_LOG)
    assert isinstance(record, Record) and record.trace_id is None
