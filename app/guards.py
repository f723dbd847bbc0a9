"""Request guards the blueprints that take JSON bodies run before validation.

``bp.before_request(require_json_body)`` answers 415 for a write whose body is not JSON and 400
for JSON nested too deeply to parse, as problems (app/errors.py turns the HTTPError into one).
"""

from __future__ import annotations

from apiflask import HTTPError
from flask import request

MAX_JSON_DEPTH = 64


def require_json_body() -> None:
    """Answer 415 for a write whose body is not JSON (before validation would answer 422),
    and 400 for JSON nested too deeply to parse."""
    if request.method in {"POST", "PUT", "PATCH"}:
        if not request.is_json:
            raise HTTPError(415)
        reject_deep_json(request.get_data(cache=True))


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
