"""Request guards the blueprints that take JSON bodies run before validation.

``init_app`` makes ``<int:...>`` in routes match ASCII digits only, and keeps METRICS_PORT to
``/metrics``.
``bp.before_request(require_json_body)`` answers 415 for a write whose body is not JSON, and 400
for JSON nested too deeply to parse or holding what Python cannot take (a lone surrogate, an
integer beyond its digit limit), as problems (app/errors.py turns the HTTPError into one).
"""

from __future__ import annotations

import json
import re
import sys

from apiflask import HTTPError
from flask import Flask, request
from werkzeug.routing import IntegerConverter

MAX_JSON_DEPTH = 64
METRICS_ENDPOINT = "metrics.scrape"  # app/telemetry/metrics.py
INT_DIGITS = sys.get_int_max_str_digits() or 4300  # 0: unlimited; the default limit otherwise
# What may hold an unencodable value: a \uD800-\uDFFF escape, or a run of digits over the limit.
SUSPECT = re.compile(rb"\\u[dD][89a-fA-F]|[0-9]{%d}" % (INT_DIGITS + 1))


class AsciiIntegerConverter(IntegerConverter):
    """``<int:...>`` for ASCII digits only. Werkzeug's ``\\d+`` matches every Unicode decimal
    digit, and int() reads them: /users/%EF%BC%91 (a full-width 1) was user 1."""

    regex = "[0-9]+"


def init_app(app: Flask) -> None:
    """Before any blueprint adds its routes: ids in paths are ASCII digits. With METRICS_PORT
    set, that port answers ``/metrics`` and nothing else (404 problem), so exposing it to
    Prometheus exposes nothing more of the service."""
    app.url_map.converters["int"] = AsciiIntegerConverter
    metrics_port = app.config["METRICS_PORT"]
    if metrics_port:
        port = str(metrics_port)

        @app.before_request
        def _metrics_port_serves_metrics_only() -> None:
            if request.environ.get("SERVER_PORT") == port and request.endpoint != METRICS_ENDPOINT:
                raise HTTPError(404)


def require_json_body() -> None:
    """Answer 415 for a write whose body is not JSON (before validation would answer 422),
    and 400 for JSON nested too deeply to parse."""
    if request.method in {"POST", "PUT", "PATCH"}:
        if not request.is_json:
            raise HTTPError(415)
        body = request.get_data(cache=True)
        reject_deep_json(body)
        reject_unencodable_json(body)


def reject_unencodable_json(body: bytes) -> None:
    """Refuse JSON that parses into what Python or the database cannot take: an integer of more
    than INT_DIGITS digits (Python raises ValueError at parse, which the validation layer would
    let through as a 500) and a lone surrogate in any string (valid JSON, but not Unicode text:
    hashing or storing it raises UnicodeEncodeError). A regex rules out almost every body at once."""
    if not SUSPECT.search(body):
        return
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return  # malformed: the validation layer answers its own 400
    except ValueError as exc:  # json's int() beyond the digit limit; UnicodeDecodeError: not UTF-8
        if isinstance(exc, UnicodeDecodeError):
            return
        raise HTTPError(400, f"The request body holds an integer of more than {INT_DIGITS} digits.") from None
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPError(400, "The request body holds a lone surrogate (\\ud800-\\udfff), which is not "
                             "Unicode text.") from None


def reject_deep_json(body: bytes) -> None:
    """Refuse a body nested deeper than MAX_JSON_DEPTH.

    The JSON parser recurses once per level and raises RecursionError (a 500) near Python's
    recursion limit. Counting brackets (C speed) rules out almost every body at once; only a body
    with many brackets is scanned, and strings are skipped so brackets inside them do not count.
    """
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            escaped, in_string = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise HTTPError(400, f"The request body is nested deeper than {MAX_JSON_DEPTH} levels.")
        elif byte in (0x5D, 0x7D):
            depth -= 1
