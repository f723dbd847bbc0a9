"""Bad input: property tests (hypothesis) and hostile cases. Every input is either rejected with a
4xx problem or stored verbatim; nothing is a 5xx, nothing is executed."""

from __future__ import annotations

import json
import string
import unicodedata

import pytest
from conftest import assert_problem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect

from app import create_app
from app.extensions import db
from app.guards import MAX_JSON_DEPTH
from app.schemas import BIDI, NAME_MAX

# Function-scoped fixtures (one app per test) are shared by the examples on purpose: state
# accumulates like on a real server. No example database is written into the repository.
EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
FIELD = st.one_of(JSON, st.text(), st.emails())
USER_BODY = st.fixed_dictionaries(
    {}, optional={"email": FIELD, "name": FIELD, "password": FIELD, "role": FIELD}
)
PRINTABLE_NAME = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=NAME_MAX)
INJECTIONS = [
    "Robert'); DROP TABLE users;--",
    "' OR '1'='1",
    "1; SELECT pg_sleep(10)",
    "<script>alert(document.cookie)</script>",
    "{{7*7}}${7*7}<%= 7*7 %>",
    "${jndi:ldap://127.0.0.1/x}",
    "../../../../etc/passwd",
    "%00%0d%0aSet-Cookie: x=y",
    "😀" * 25,
]


# Where JSON text can carry what Python cannot hold: a lone surrogate (valid JSON escape, not
# Unicode a database or a hash can encode) and an integer beyond Python's 4300-digit limit.
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
LONE_SURROGATE = SURROGATES.map(  # one alone: two may pair up into a valid character
    lambda bad: json.dumps("abc" + bad))  # ensure_ascii: written as \udxxx escapes
HUGE_INTEGER = st.integers(min_value=4301, max_value=6000).map(lambda digits: "9" * digits)
HOSTILE_VALUE = st.one_of(LONE_SURROGATE, HUGE_INTEGER)
GOOD_BODY = json.dumps({"email": "h@example.com", "name": "H", "password": "long-enough",
                        "current_password": "long-enough"})
HOSTILE_BODY = st.builds(  # the hostile value put before one field, bare or nested
    lambda field, value, wrap: GOOD_BODY.replace(
        f'"{field}": ', f'"{field}": {wrap.replace("V", value)}, "{field}_was": ', 1),
    st.sampled_from(["email", "name", "password", "current_password"]), HOSTILE_VALUE,
    st.sampled_from(["V", "[V]", '{"k": V}']),
)


def server_errors_counted(app) -> float:
    """Requests answered 5xx, as the SLO counts them."""
    registry = app.extensions["lookout.telemetry"].metrics.registry
    return sum(sample.value for family in registry.collect() if family.name == "http_server_requests"
               for sample in family.samples
               if sample.name == "http_server_requests_total" and sample.labels["status"].startswith("5"))


@pytest.fixture
def app(database_url):
    """The usual app, without rate limits: hundreds of examples would exhaust them. No request of
    this file may count as a server error: each would burn the availability SLO."""
    from conftest import empty_users

    app = create_app({"DATABASE_URL": database_url, "RATE_LIMIT_ENABLED": "false"})
    with app.app_context():
        yield app
        assert server_errors_counted(app) == 0
        empty_users()


def send(client, method: str, path: str, body, headers=None):
    """Send ``body`` as JSON text (also ``null``, which ``json=None`` would leave out)."""
    return client.open(
        path,
        method=method,
        data=json.dumps(body),
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def assert_clean(response, allowed: set[int]) -> None:
    assert response.status_code in allowed, response.get_data(as_text=True)[:500]
    if response.status_code >= 400:
        assert_problem(response, response.status_code)


@EXAMPLES
@given(body=st.one_of(JSON, USER_BODY))
def test_any_json_body_for_a_new_user_is_answered_cleanly(client, admin_headers, body):
    response = send(client, "POST", "/api/v1/users", body, admin_headers)
    assert_clean(response, {201, 400, 409, 422})


@EXAMPLES
@given(body=st.one_of(JSON, USER_BODY))
def test_any_json_body_for_an_update_is_answered_cleanly(client, admin_headers, body):
    response = send(client, "PATCH", "/api/v1/users/1", body, admin_headers)
    assert_clean(response, {200, 400, 403, 404, 409, 422})  # 403: own password, no current one


@EXAMPLES
@given(body=st.one_of(JSON, st.fixed_dictionaries({"email": FIELD, "password": FIELD})))
def test_any_json_body_for_a_token_is_answered_cleanly(client, body):
    assert_clean(send(client, "POST", "/api/v1/auth/token", body), {400, 401, 422})


@EXAMPLES
@given(raw=HOSTILE_BODY, anonymous=st.booleans(),
       where=st.sampled_from([("POST", "/api/v1/users"), ("PATCH", "/api/v1/users/1"),
                              ("POST", "/api/v1/auth/token")]))
def test_lone_surrogates_and_huge_integers_anywhere_are_a_4xx(client, admin_headers, raw, anonymous, where):
    """Before or without authentication: the body is refused as it is parsed."""
    method, path = where
    headers = {} if anonymous else admin_headers
    response = client.open(path, method=method, data=raw,
                           headers={**headers, "Content-Type": "application/json"})
    assert_clean(response, {400, 422})


@pytest.mark.parametrize("raw", [
    b'{"email": "a@example.com", "password": "abc\\ud800"}',
    b'{"email": "a\\udfff@example.com", "password": "long-enough"}',
    b'{"email": "a@example.com", "password": "long-enough", "x": [' + b"1" * 4301 + b"]}",
    b'{"email": "a@example.com", "password": ' + b"1" * 5000 + b"}",
], ids=["surrogate in password", "surrogate in email", "huge integer nested", "huge integer"])
def test_an_anonymous_token_request_with_an_unencodable_body_is_400(client, app, raw):
    response = client.post("/api/v1/auth/token", data=raw, content_type="application/json")
    body = assert_problem(response, 400)
    assert "Traceback" not in body["detail"]


@EXAMPLES
@given(raw=st.binary(max_size=2048))
def test_any_bytes_as_a_json_body_are_answered_cleanly(client, admin_headers, raw):
    response = client.post(
        "/api/v1/users", data=raw, headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert_clean(response, {201, 400, 409, 422})


@EXAMPLES
@given(page=st.text(max_size=30), per_page=st.text(max_size=30))
def test_any_query_for_a_page_is_answered_cleanly(client, admin_headers, page, per_page):
    response = client.get("/api/v1/users", query_string={"page": page, "per_page": per_page},
                          headers=admin_headers)
    assert_clean(response, {200, 422})


@EXAMPLES
@given(name=PRINTABLE_NAME)
def test_a_valid_name_is_stored_as_sent_less_surrounding_space(client, admin_headers, name):
    response = client.post(
        "/api/v1/users",
        headers=admin_headers,
        json={"email": f"n{abs(hash(name))}@example.com", "name": name, "password": "long-enough"},
    )
    invisible_only = all(unicodedata.category(ch) in {"Cf", "Zs", "Zl", "Zp", "Mn"} for ch in name)
    if not name.strip() or BIDI.search(name) or invisible_only:  # tests/test_users_api.py has cases
        assert_clean(response, {422})
        return
    assert response.status_code in (201, 409), response.get_json()
    if response.status_code == 201:
        stored = client.get(response.headers["Location"], headers=admin_headers).get_json()
        assert stored["name"] == name.strip()


@EXAMPLES
@given(email=st.emails())
def test_email_normalisation_is_idempotent_and_unique(client, admin_headers, email):
    body = {"name": "E", "password": "long-enough"}
    first = client.post("/api/v1/users", headers=admin_headers, json={**body, "email": email})
    if first.status_code != 201:
        assert_clean(first, {409, 422})
        return
    again = client.post("/api/v1/users", headers=admin_headers, json={**body, "email": f"  {email.upper()} "})
    assert_clean(again, {409})
    assert first.get_json()["email"] == email.strip().lower()


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_style_strings_are_stored_verbatim_never_run(client, admin_headers, app, value):
    response = client.post(
        "/api/v1/users",
        headers=admin_headers,
        json={"email": "inject@example.com", "name": value, "password": value + "-long-enough"},
    )
    assert response.status_code == 201, response.get_json()
    assert response.mimetype == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get(response.headers["Location"], headers=admin_headers).get_json()["name"] == value
    with app.app_context():
        assert "users" in inspect(db.engine).get_table_names()
    listed = client.get("/api/v1/users", query_string={"page": value}, headers=admin_headers)
    assert_clean(listed, {422})


def test_an_injection_in_the_path_is_a_404(client, admin_headers):
    for path in (
        "/api/v1/users/1%20OR%201=1",
        "/api/v1/users/1;DROP%20TABLE%20users",
        "/api/v1/users/-1",
        "/api/v1/users/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/users/99999999999999999999999",
        "/api/v1/users/%EF%BC%91",  # a full-width 1: a digit to Python's \d, not an id
        "/api/v1/users/%D9%A1",  # an Arabic-indic 1
        "/api/v1/users/%C2%B2",  # a superscript 2
        "/api/v1/users/" + "9" * 5000,
    ):
        assert_problem(client.get(path, headers=admin_headers), 404)


@pytest.mark.parametrize("depth, status", [(MAX_JSON_DEPTH, 422), (MAX_JSON_DEPTH + 1, 400), (100_000, 400)])
def test_deep_nesting_is_refused_before_parsing(client, admin_headers, depth, status):
    body = "[" * depth + "]" * depth
    response = client.post(
        "/api/v1/users", data=body, headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert_problem(response, status)


def test_brackets_inside_strings_do_not_count_as_nesting(client, admin_headers):
    name = "[{" * 200
    response = client.post(
        "/api/v1/users",
        headers=admin_headers,
        json={"email": "brackets@example.com", "name": name[:NAME_MAX], "password": "long-enough"},
    )
    assert response.status_code == 201


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 8 * 1024 * 1024])
def test_a_huge_body_is_413(client, admin_headers, size):
    body = json.dumps({"email": "big@example.com", "name": "x" * size, "password": "long-enough"})
    response = client.post(
        "/api/v1/users", data=body, headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert_problem(response, 413)


def test_huge_fields_within_the_body_limit_are_422(client, admin_headers):
    response = client.post(
        "/api/v1/users",
        headers=admin_headers,
        json={"email": "a" * 10_000 + "@example.com", "name": "x" * 100_000, "password": "p" * 300_000},
    )
    body = assert_problem(response, 422)
    assert {e["field"] for e in body["errors"]} == {"email", "name", "password"}
    assert "x" * 200 not in response.get_data(as_text=True)  # the values are not echoed


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe\xfd", b'{"email": "\xc3\x28"}', b"\xef\xbb\xbf{}", b'{"a": 1}\x00']
)
def test_non_utf8_bodies_are_400(client, admin_headers, raw):
    response = client.post(
        "/api/v1/users", data=raw, headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert_clean(response, {400, 422})


@pytest.mark.parametrize("request_id", ["x" * 129, "a\r\nSet-Cookie: x=y", "<script>", ""])
def test_a_hostile_request_id_is_replaced_not_echoed(client, request_id):
    response = client.get("/livez", headers={"X-Request-ID": request_id} if "\n" not in request_id else {})
    echoed = response.headers["X-Request-ID"]
    assert echoed != request_id and all(c in string.hexdigits for c in echoed)


CONTROL = ["\x00", "\x07", "\x1b[31m", "\x7f", "\x85"]
STRING_FIELDS = [
    ("POST", "/api/v1/users", {"email": "cc@example.com", "name": "C", "password": "long-enough"}),
    ("PATCH", "/api/v1/users/1", {"email": "cc@example.com", "name": "C", "password": "long-enough"}),
    ("POST", "/api/v1/auth/token", {"email": "cc@example.com", "password": "long-enough"}),
]


@pytest.mark.parametrize("char", CONTROL, ids=repr)
@pytest.mark.parametrize("method, path, body", STRING_FIELDS, ids=lambda v: v if isinstance(v, str) else "")
def test_a_control_character_in_any_string_field_is_422_naming_the_field(
    client, admin_headers, method, path, body, char
):
    """NUL in particular must never reach the database: PostgreSQL text cannot hold it."""
    for field in body:
        value = body[field]
        bad = {**body, field: value[:2] + char + value[2:]}
        problem = assert_problem(send(client, method, path, bad, admin_headers), 422)
        assert [e["field"] for e in problem["errors"]] == [field], (field, problem)
