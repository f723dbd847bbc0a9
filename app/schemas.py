"""Request and response schemas: the single source for validation and the OpenAPI spec."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from apiflask import Schema
from apiflask.fields import DateTime, Dict, Email, Enum, Integer, List, Nested, String
from apiflask.validators import Length, Range
from flask import current_app
from marshmallow import ValidationError, post_load, pre_load, validates_schema

from .models import Role

EMAIL_MAX = 254
NAME_MAX = 100
PASSWORD_MIN, PASSWORD_MAX = 8, 256


def printable(value: str) -> None:
    """Reject control characters (NUL would also break PostgreSQL text columns)."""
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValidationError("Must not contain control characters.")


def not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must contain a character other than white space.")


# Bidirectional controls reorder what is displayed around them ("\u202eevil" shows as "live"):
# never in a name or an email.
BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Characters that show nothing on their own: formats, spaces, controls, combining marks.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Zs", "Zl", "Zp", "Cc", "Mn"})


def no_bidi_controls(value: str) -> None:
    if BIDI.search(value):
        raise ValidationError("Must not contain bidirectional control characters (U+202A-202E, "
                              "U+2066-2069, U+200E, U+200F, U+061C).")


def visible(value: str) -> None:
    """Refuse a name made only of invisible characters (not_blank answers for white space)."""
    if value.strip() and all(unicodedata.category(ch) in INVISIBLE_CATEGORIES for ch in value):
        raise ValidationError("Must contain a visible character, not only invisible or combining ones.")


def script_of(ch: str) -> str | None:
    """The script of a letter, from the first word of its Unicode name (LATIN, CYRILLIC, GREEK);
    None for what every script shares (digits, punctuation) and for the CJK family, whose
    scripts are written together."""
    if not ch.isalpha():
        return None
    word = unicodedata.name(ch, "").split(" ", 1)[0]
    return None if word in {"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO"} else word or None


def one_script_per_part(value: str) -> None:
    """Refuse an address whose local part or a domain label mixes scripts, the way a look-alike
    is made ("\\u0430dmin": a Cyrillic a before Latin letters), in the spirit of UTS #39's
    single-script restriction.
    Written here because the standard library has no Script property and this rule needs only
    the letters' names; confusable-homoglyphs would bring data of an older Unicode version."""
    local, _, domain = value.rpartition("@")
    for part in (local, *domain.split(".")):
        scripts = {script for ch in part if (script := script_of(ch))}
        if len(scripts) > 1:
            raise ValidationError(f"Must not mix scripts ({', '.join(sorted(scripts))}) within one part: "
                                  "it would look like another address.")


# The same rules as JSON Schema patterns for the spec (ECMA-262 and Python agree on these
# explicit ranges): no control character (Unicode category Cc), and for a name at least one
# character that str.strip() would keep; docs.py narrows the name's to the exact rule.
CC = "\\u0000-\\u001F\\u007F-\\u009F"
SPACE = "\\u0020\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000"
BIDI_RANGES = "\\u061C\\u200E\\u200F\\u202A-\\u202E\\u2066-\\u2069"
PRINTABLE = {"pattern": f"^[^{CC}]*$"}
NAME_PATTERN = {"pattern": f"^[^{CC}{BIDI_RANGES}]*[^{CC}{SPACE}{BIDI_RANGES}][^{CC}{BIDI_RANGES}]*$"}


@functools.cache
def name_pattern() -> str:
    """NAME_PATTERN with every invisible character spelled out (the ``visible`` rule): one pass
    over the basic plane, so only when the spec is built, and once."""
    ranges, start = [], None
    for cp in range(0x10001):
        invisible = cp <= 0xFFFF and unicodedata.category(chr(cp)) in INVISIBLE_CATEGORIES
        if invisible and start is None:
            start = cp
        elif not invisible and start is not None:
            ranges.append((start, cp - 1))
            start = None

    def char(cp: int) -> str:  # \\uXXXX: the escape ECMA-262 and Python read alike
        return f"\\u{cp:04X}"

    # The basic plane only: ECMA-262 patterns without the u flag cannot name other planes'
    # characters, so a name of only (rare) invisible characters from them passes the pattern
    # and is refused by ``visible`` alone.
    hidden = "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges)
    return f"^[^{CC}{BIDI_RANGES}]*[^{hidden}][^{CC}{BIDI_RANGES}]*$"


def normalise_email(value: str) -> str:
    """NFKC, then trimmed and lower-cased: full-width "\\uff21\\uff24..." letters become ASCII ones."""
    return unicodedata.normalize("NFKC", value).strip().lower()


class UserBase(Schema):
    @pre_load
    def _normalise_email(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("email"), str):
            data = {**data, "email": normalise_email(data["email"])}
        return data

    @post_load
    def _trim_name(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Trim after validation, so the limits in the spec apply to what the client sends."""
        if "name" in data:
            data["name"] = data["name"].strip()
        return data


NAME_RULES: list[Callable[[str], Any]] = [Length(min=1, max=NAME_MAX), printable, not_blank, no_bidi_controls,
                                          visible]
EMAIL_RULES: list[Callable[[str], Any]] = [Length(max=EMAIL_MAX), no_bidi_controls, one_script_per_part]
PASSWORD_RULES: list[Callable[[str], Any]] = [Length(min=PASSWORD_MIN, max=PASSWORD_MAX), printable]


class UserIn(UserBase):
    email = Email(required=True, validate=EMAIL_RULES)
    name = String(required=True, validate=NAME_RULES, metadata=NAME_PATTERN)
    password = String(required=True, load_only=True, validate=PASSWORD_RULES, metadata=PRINTABLE)
    role = Enum(Role, by_value=True, load_default=Role.USER)


class UserPatch(UserBase):
    email = Email(validate=EMAIL_RULES)
    name = String(validate=NAME_RULES, metadata=NAME_PATTERN)
    password = String(load_only=True, validate=PASSWORD_RULES, metadata=PRINTABLE)
    role = Enum(Role, by_value=True)
    current_password = String(
        load_only=True, validate=[Length(min=1, max=PASSWORD_MAX), printable],
        metadata={**PRINTABLE, "description": "Required when changing your own `password` or `email`."},
    )

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data.keys() - {"current_password"}:
            raise ValidationError("Give at least one field to update.", "_schema")


class UserPublic(Schema):
    """A user as any authenticated caller sees another (app/api/policy.py)."""

    id = Integer(required=True)
    name = String(required=True)


class UserFull(UserPublic):
    """A user as the user themself and admins see it (app/api/policy.py)."""

    email = String(required=True)
    role = Enum(Role, by_value=True, required=True)
    created_by = Integer(attribute="created_by_id", allow_none=True, required=True)
    created_at = DateTime(required=True)
    updated_at = DateTime(required=True)


class PageQuery(Schema):
    page = Integer(load_default=1, validate=Range(min=1, max=1_000_000))
    per_page = Integer(load_default=None, validate=Range(min=1, max=1_000_000))
    role = Enum(Role, by_value=True, metadata={"description": "Only users of this role."})
    email = String(validate=[Length(min=1, max=EMAIL_MAX), printable],
                   metadata={**PRINTABLE, "description": "Only the user with this email (compared as stored: "
                             "normalised, case-insensitive)."})

    @post_load
    def _cap(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Apply the configured default and cap rather than rejecting large page sizes."""
        config = current_app.config
        data["per_page"] = min(data["per_page"] or config["PAGE_SIZE_DEFAULT"], config["PAGE_SIZE_MAX"])
        return data


LINK = {"format": "uri-reference",
        "description": "A relative link, or an absolute one under PUBLIC_URL; empty when there is no such "
                       "page."}


class PageLinks(Schema):
    """Where a page is, and links to its neighbours that keep the request's filters."""

    page = Integer(required=True)
    per_page = Integer(required=True)
    pages = Integer(required=True)
    total = Integer(required=True)
    current = String(required=True, metadata=LINK)
    next = String(required=True, metadata=LINK)
    prev = String(required=True, metadata=LINK)
    first = String(required=True, metadata=LINK)
    last = String(required=True, metadata=LINK)


class UsersPage(Schema):
    items = List(Nested(UserFull), required=True)
    pagination = Nested(PageLinks, required=True)


class TokenIn(Schema):
    # Not Email(): a malformed address is a failed login (401), not a validation error that
    # would tell a caller which addresses are well-formed. Control characters are refused,
    # like everywhere else: none can be in a stored address, and NUL breaks PostgreSQL.
    email = String(required=True, validate=[Length(min=1, max=EMAIL_MAX), printable], metadata=PRINTABLE)
    password = String(required=True, load_only=True, validate=[Length(min=1, max=PASSWORD_MAX), printable],
                      metadata=PRINTABLE)


class TokenOut(Schema):
    access_token = String(required=True)
    token_type = String(required=True, metadata={"example": "Bearer"})
    expires_in = Integer(required=True, metadata={"description": "Lifetime in seconds."})


class ServiceInfo(Schema):
    service = String(required=True)
    version = String(required=True)
    commit = String(required=True)
    environment = String(required=True)
    links = Nested(Schema.from_dict({"docs": String(), "openapi": String(), "users": String(),
                                     "health": String()}, name="ServiceLinks"), required=True)


class HealthOut(Schema):
    status = String(required=True, metadata={"example": "ok"})
    checks = Nested(Schema.from_dict({"database": String()}, name="HealthChecks"))


class Problem(Schema):
    """RFC 9457 problem details: the body of every error response."""

    type = String(required=True, metadata={"example": "about:blank"})
    title = String(required=True, metadata={"example": "Not Found"})
    status = Integer(required=True, metadata={"example": 404})
    detail = String(required=True, metadata={"example": "No user with id 7."})
    instance = String(required=True, metadata={"example": "/api/v1/users/7"})


class NotReadyProblem(Problem):
    """/readyz's 503: a problem that also names the failing check."""

    checks = Dict(keys=String(), values=String(), required=True,
                  metadata={"example": {"database": "failing"}})


class FieldError(Schema):
    location = String(required=True, metadata={"example": "json"})
    field = String(required=True, allow_none=True, metadata={"example": "email"})
    message = String(required=True, metadata={"example": "Not a valid email address."})


class ValidationProblem(Problem):
    errors = List(Nested(FieldError), required=True)
