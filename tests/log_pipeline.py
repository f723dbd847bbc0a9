"""A small interpreter of the collector's filelog operators the program configures, and only those.

The collector (otelcol-contrib) is no Debian or PyPI package, so tests cannot run it here. This
evaluates the operator list the program renders (``infra.components.monitoring_values``) with the
semantics the operators' documentation and source give (opentelemetry-collector-contrib,
pkg/stanza: operator/parser/container, parser/json, parser/trace, parser/severity,
transformer/move, transformer/remove):

- ``container`` (CRI format ``<time> <stdout|stderr> <P|F> <content>``): the content becomes the
  body, ``log.iostream`` and ``logtag`` attributes, the time the record's timestamp; lines tagged P
  (partial) are joined with the next until an F line; with ``add_metadata_from_filepath`` the
  resource gets namespace, pod name and uid, container name and restart count from the path
  ``/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log``.
- ``json_parser``: the JSON object at ``parse_from`` is merged into ``parse_to``; the source stays.
- ``trace_parser``: hex trace and span ids at their fields become the record's trace context; an
  absent field sets nothing, a field that is not hex is an error.
- ``severity_parser``: the value at ``parse_from``, lower-cased, is looked up in the built-in
  mapping (otel names, plus warning and err) with the operator's ``mapping`` added; the original
  text becomes the severity text; an unknown value is an error.
- ``move`` / ``remove``: a missing field is an error.
- ``on_error: send`` / ``send_quiet``: on an error the record goes on unchanged by that operator.

Any other operator type, or an option not listed here, raises: a change of the configuration must
be taught here before the test passes. The kind e2e workflow checks the real collector and Loki
(infra/delivery/e2e.py, ``check``: a request's line found in Loki by its trace id).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CRI = re.compile(r"^(?P<time>[^ Z]+Z) (?P<stream>stdout|stderr) (?P<logtag>[^ ]*) ?(?P<log>.*)$")
POD_LOG_PATH = re.compile(r"^.*/(?P<namespace>[^_]+)_(?P<pod_name>[^_]+)_(?P<uid>[a-f0-9\-]+)/"
                          r"(?P<container_name>[^._]+)/(?P<restart_count>\d+)\.log$")
SEVERITIES = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17, "fatal": 21}
BUILT_IN = {**SEVERITIES, "warning": 13, "err": 17}
KNOWN_OPTIONS = {
    "container": {"type", "id", "add_metadata_from_filepath"},
    "json_parser": {"type", "id", "parse_from", "parse_to", "on_error"},
    "trace_parser": {"type", "id", "trace_id", "span_id", "on_error"},
    "severity_parser": {"type", "id", "parse_from", "mapping", "on_error"},
    "move": {"type", "id", "from", "to", "on_error"},
    "remove": {"type", "id", "field", "on_error"},
}


class OperatorError(Exception):
    pass


@dataclass
class Record:
    body: Any
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None
    trace_id: bytes | None = None
    span_id: bytes | None = None
    severity: int | None = None
    severity_text: str | None = None


def _split(path: str) -> tuple[str, list[str]]:
    top, _, rest = path.partition(".")
    if top not in ("body", "attributes", "resource"):
        raise TypeError(f"field {path!r}: only body, attributes.x and resource.x are handled")
    return top, [rest] if rest else []  # attribute names with dots are one key (log.iostream)


def get(record: Record, path: str) -> Any:
    top, keys = _split(path)
    if top == "body":
        if keys:
            raise TypeError("nested body fields are not used")
        return record.body
    values = getattr(record, top)
    if keys[0] not in values:
        raise KeyError(path)
    return values[keys[0]]


def put(record: Record, path: str, value: Any) -> None:
    top, keys = _split(path)
    if top == "body":
        record.body = value
    else:
        getattr(record, top)[keys[0]] = value


def delete(record: Record, path: str) -> Any:
    top, keys = _split(path)
    if top == "body":
        value, record.body = record.body, None
        return value
    return getattr(record, top).pop(keys[0])


def cri_time(text: str) -> datetime:
    """RFC 3339 with nanoseconds, as kubelet writes it; Python keeps microseconds."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]:0<6}+00:00")


def container(lines: list[str], path: str, op: dict[str, Any]) -> list[Record]:
    records: list[Record] = []
    pending: list[str] = []
    for line in lines:
        match = CRI.match(line)
        if not match:
            raise OperatorError(f"not a CRI line: {line[:80]!r}")
        pending.append(match["log"])
        if match["logtag"] == "P":
            continue
        record = Record(body="".join(pending), timestamp=cri_time(match["time"]),
                        attributes={"log.file.path": path, "log.iostream": match["stream"],
                                    "logtag": match["logtag"]})
        pending = []
        if op.get("add_metadata_from_filepath", True):
            meta = POD_LOG_PATH.match(path)
            if not meta:
                raise OperatorError(f"{path}: not a pod log path")
            record.resource.update({
                "k8s.namespace.name": meta["namespace"], "k8s.pod.name": meta["pod_name"],
                "k8s.pod.uid": meta["uid"], "k8s.container.name": meta["container_name"],
                "k8s.container.restart_count": meta["restart_count"]})
        records.append(record)
    return records


def _json_parser(record: Record, op: dict[str, Any]) -> None:
    parsed = json.loads(get(record, op.get("parse_from", "body")))
    if not isinstance(parsed, dict):
        raise OperatorError("not a JSON object")
    target = op.get("parse_to", "attributes")
    if target != "attributes":
        raise TypeError("only parse_to: attributes is used")
    record.attributes.update(parsed)


def _hex(record: Record, spec: dict[str, Any] | None, default: str) -> bytes | None:
    try:
        value = get(record, (spec or {}).get("parse_from", default))
    except KeyError:
        return None
    return bytes.fromhex(str(value))  # ValueError when not hex


def _trace_parser(record: Record, op: dict[str, Any]) -> None:
    record.trace_id = _hex(record, op.get("trace_id"), "body")
    record.span_id = _hex(record, op.get("span_id"), "body")


def _severity_parser(record: Record, op: dict[str, Any]) -> None:
    mapping = dict(BUILT_IN)
    for severity, values in (op.get("mapping") or {}).items():
        for value in values if isinstance(values, list) else [values]:
            mapping[str(value).lower()] = SEVERITIES[severity]
    text = get(record, op["parse_from"])
    if str(text).lower() not in mapping:
        raise OperatorError(f"unknown severity {text!r}")
    record.severity, record.severity_text = mapping[str(text).lower()], str(text)


def _move(record: Record, op: dict[str, Any]) -> None:
    put(record, op["to"], delete(record, op["from"]))


def _remove(record: Record, op: dict[str, Any]) -> None:
    delete(record, op["field"])


STEPS = {"json_parser": _json_parser, "trace_parser": _trace_parser, "severity_parser": _severity_parser,
         "move": _move, "remove": _remove}


def run(operators: list[dict[str, Any]], lines: list[str], path: str) -> list[Record]:
    """Feed the CRI ``lines`` of the file at ``path`` through ``operators``; return the records."""
    for op in operators:
        unknown = set(op) - KNOWN_OPTIONS.get(op["type"], set())
        if op["type"] not in KNOWN_OPTIONS or unknown:
            raise ValueError(f"operator {op.get('id', op['type'])}: {op['type']} {sorted(unknown)} is not "
                             "interpreted here; teach tests/log_pipeline.py its documented semantics")
    first, *rest = operators
    if first["type"] != "container":
        raise ValueError("the pipeline must start with the container parser (kubelet writes CRI lines)")
    records = container(lines, path, first)
    for record in records:
        for op in rest:
            before = copy.deepcopy(record)
            try:
                STEPS[op["type"]](record, op)
            except (OperatorError, KeyError, ValueError):
                if op.get("on_error", "send") not in ("send", "send_quiet"):
                    raise
                record.__dict__.update(before.__dict__)  # sent on as the operator received it
    return records
