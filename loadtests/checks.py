"""What a correct answer looks like: pure checks of response bodies, and ``expect`` for personas.

Usage (inside a persona, with Locust's ``rest`` context manager, which parses JSON into
``resp.js`` and turns an AssertionError raised in the block into a failed request):

    with self.rest("GET", f"/api/v1/users/{uid}", name="/api/v1/users/[id]") as resp:
        user = expect(resp, 200, user_errors)

Each ``*_errors`` function returns a list of what is wrong (empty when the body is right), so
the checks are testable without a server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
ROLES = {"user", "admin"}
USER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": int, "email": str, "name": str, "role": str,
    "created_by": (int, type(None)), "created_at": str, "updated_at": str,
}
# What every authenticated caller sees of any user; the user themself and admins get USER_FIELDS.
PROFILE_FIELDS: dict[str, type | tuple[type, ...]] = {"id": int, "name": str}
PAGINATION_FIELDS = ("page", "per_page", "pages", "total", "next", "prev", "first", "last", "current")
PROBLEM_FIELDS: dict[str, type] = {"type": str, "title": str, "status": int, "detail": str, "instance": str}

Check = Callable[[Any], list[str]]


def _field_errors(body: Any, fields: dict[str, Any], what: str) -> list[str]:
    if not isinstance(body, dict):
        return [f"{what} is not a JSON object"]
    errors = []
    for field, kind in fields.items():
        if field not in body:
            errors.append(f"{what} has no {field!r}")
        # bool is an int in Python; an id or status of true is still wrong
        elif not isinstance(body[field], kind) or isinstance(body[field], bool):
            errors.append(f"{what}.{field} is {type(body[field]).__name__}")
    return errors


def user_errors(body: Any) -> list[str]:
    """Check a user representation: every field, with its type, and no password."""
    errors = _field_errors(body, USER_FIELDS, "user")
    if isinstance(body, dict):
        if body.get("role") not in ROLES:
            errors.append(f"user.role {body.get('role')!r} is not one of {sorted(ROLES)}")
        if "password" in body or "password_hash" in body:
            errors.append("user carries a password field")
    return errors


def profile_errors(body: Any) -> list[str]:
    """Check a user as another user sees it: at least the public profile, and no password.

    The full record's fields may be there too (before reads were restricted, everyone got them);
    those that are there must have their types.
    """
    errors = _field_errors(body, PROFILE_FIELDS, "user")
    if isinstance(body, dict):
        present = {k: v for k, v in USER_FIELDS.items() if k in body and k not in PROFILE_FIELDS}
        errors += _field_errors(body, present, "user")
        if "password" in body or "password_hash" in body:
            errors.append("user carries a password field")
    return errors


def page_errors(body: Any) -> list[str]:
    """Check a page of users: items are users, pagination has every link and count."""
    if not isinstance(body, dict):
        return ["page is not a JSON object"]
    errors = []
    items, pagination = body.get("items"), body.get("pagination")
    if not isinstance(items, list):
        errors.append("page has no items list")
    else:
        errors += [f"items[{n}]: {e}" for n, item in enumerate(items) for e in user_errors(item)]
    if not isinstance(pagination, dict):
        errors.append("page has no pagination object")
    else:
        errors += [f"pagination has no {f!r}" for f in PAGINATION_FIELDS if f not in pagination]
        if isinstance(items, list) and isinstance(pagination.get("per_page"), int) \
                and len(items) > pagination["per_page"]:
            errors.append(f"{len(items)} items exceed per_page {pagination['per_page']}")
    return errors


def token_errors(body: Any) -> list[str]:
    """Check a token answer: a bearer token and a positive lifetime."""
    errors = _field_errors(body, {"access_token": str, "token_type": str, "expires_in": int}, "token")
    if not errors:
        if body["token_type"] != "Bearer":  # noqa: S105 (a token type, not a secret)
            errors.append(f"token_type is {body['token_type']!r}, not 'Bearer'")
        if body["expires_in"] <= 0 or not body["access_token"]:
            errors.append("token is empty or already expired")
    return errors


def problem_errors(status: int) -> Check:
    """Return a check of an RFC 9457 problem body for ``status``."""

    def check(body: Any) -> list[str]:
        errors = _field_errors(body, PROBLEM_FIELDS, "problem")
        if not errors and body["status"] != status:
            errors.append(f"problem.status is {body['status']}, not {status}")
        return errors

    return check


def no_body(body: Any) -> list[str]:
    """Check that a 204 answer is empty."""
    return [] if body in (None, "", {}) else ["a 204 answer has a body"]


def expect(resp: Any, status: int, check: Check) -> Any:
    """Fail ``resp`` unless it has ``status``, the right media type and a body ``check`` accepts.

    Raises AssertionError (Locust's ``rest`` marks the request failed with its message); marks
    the request successful otherwise, which an expected 4xx needs. Returns the parsed body.
    """
    if resp.status_code == 0:
        raise AssertionError(f"no response: {getattr(resp, 'error', 'connection failed')}")
    if resp.status_code != status:
        raise AssertionError(f"expected {status}, got {resp.status_code}: {(resp.text or '')[:200]}")
    if status != 204:
        media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        wanted = PROBLEM_JSON if status >= 400 else JSON
        if media_type != wanted:
            raise AssertionError(f"{status} answer is {media_type or 'untyped'}, not {wanted}")
    errors = check(resp.js)
    if errors:
        raise AssertionError("; ".join(errors[:3]))
    resp.success()
    return resp.js
