"""schemathesis hooks for tests/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

- Bodies also carry what JSON can spell and Python cannot hold: a lone surrogate in a string
  and an integer of more than 4300 digits, in any field; the service must answer 400 or 422.
- ``no_other_users_email_or_role``: with LOOKOUT_FUZZ_CALLER_ID set (a regular user's run), no
  answer may carry the email or role of a user other than that caller.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import schemathesis
from hypothesis import strategies as st

# This process only: lets requests write the over-long integers below (the service keeps the limit).
sys.set_int_max_str_digits(0)

LONE_SURROGATE = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"]).map(lambda s: f"abc{s}")
HUGE_INTEGER = st.integers(min_value=4301, max_value=6000).map(lambda digits: int("9" * digits))


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy:
    """The generated body, or the same with one field replaced by an unencodable value."""
    if not isinstance(body, dict) or not body:
        return st.just(body)
    fields = sorted(body, key=str)
    hostile = st.builds(lambda field, value: {**body, field: value}, st.sampled_from(fields),
                        st.one_of(LONE_SURROGATE, HUGE_INTEGER))
    return st.one_of(st.just(body), hostile)


def users_in(value: Any) -> list[dict[str, Any]]:
    """Every object in an answer that looks like a user (has an id and a name)."""
    if isinstance(value, dict):
        found = [value] if {"id", "name"} <= value.keys() else []
        return found + [user for item in value.values() for user in users_in(item)]
    if isinstance(value, list):
        return [user for item in value for user in users_in(item)]
    return []


@schemathesis.check
def no_other_users_email_or_role(ctx: Any, response: Any, case: Any) -> None:
    caller = os.environ.get("LOOKOUT_FUZZ_CALLER_ID")
    if not caller or "json" not in response.headers.get("content-type", [""])[0]:  # lower-cased names
        return
    try:
        body = response.json()
    except ValueError:
        return
    for user in users_in(body):
        if str(user["id"]) != caller and ({"email", "role"} & user.keys()):
            raise AssertionError(f"a regular user read another user's email or role: {user}")
