"""Every bad input answers with its status as application/problem+json, never a traceback."""

from __future__ import annotations

import logging

import pytest
from conftest import assert_problem

GOOD = {"email": "x@example.com", "name": "X", "password": "long-enough"}
JSON = {"Content-Type": "application/json"}

CASES = [
    # (id, method, path, kwargs, status)
    ("malformed json", "post", "/api/v1/users", {"data": '{"email": ', "headers": JSON}, 400),
    ("malformed json on token", "post", "/api/v1/auth/token", {"data": "{", "headers": JSON}, 400),
    ("invalid utf-8", "post", "/api/v1/users", {"data": b'{"name": "\xff"}', "headers": JSON}, 400),
    ("missing fields", "post", "/api/v1/users", {"json": {}}, 422),
    ("bad email", "post", "/api/v1/users", {"json": {**GOOD, "email": "not-an-email"}}, 422),
    ("short password", "post", "/api/v1/users", {"json": {**GOOD, "password": "short"}}, 422),
    ("empty name", "post", "/api/v1/users", {"json": {**GOOD, "name": "   "}}, 422),
    ("long name", "post", "/api/v1/users", {"json": {**GOOD, "name": "n" * 101}}, 422),
    ("nul in name", "post", "/api/v1/users", {"json": {**GOOD, "name": "a\x00b"}}, 422),
    ("unknown role", "post", "/api/v1/users", {"json": {**GOOD, "role": "root"}}, 422),
    ("unknown field", "post", "/api/v1/users", {"json": {**GOOD, "is_admin": True}}, 422),
    ("wrong type", "post", "/api/v1/users", {"json": {**GOOD, "name": 42}}, 422),
    ("body is a list", "post", "/api/v1/users", {"json": [GOOD]}, 422),
    ("empty patch", "patch", "/api/v1/users/{admin}", {"json": {}}, 422),
    ("bad page", "get", "/api/v1/users?page=0", {}, 422),
    ("non-numeric page", "get", "/api/v1/users?per_page=lots", {}, 422),
    ("form body", "post", "/api/v1/users", {"data": GOOD}, 415),
    ("text body", "post", "/api/v1/users", {"data": "hello", "headers": {"Content-Type": "text/plain"}}, 415),
    ("no body", "post", "/api/v1/users", {}, 415),
    ("form on token", "post", "/api/v1/auth/token", {"data": {"email": "a", "password": "b"}}, 415),
    ("form on patch", "patch", "/api/v1/users/{admin}", {"data": {"name": "y"}}, 415),
    ("body too large", "post", "/api/v1/users",
     {"data": '{"name": "' + "x" * (1024 * 1024) + '"}', "headers": JSON}, 413),
    ("unknown route", "get", "/api/v1/nothing-here", {}, 404),
    ("unknown id", "get", "/api/v1/users/999999", {}, 404),
    ("non-integer id", "get", "/api/v1/users/abc", {}, 404),
    ("wrong method", "put", "/api/v1/users/1", {"json": GOOD}, 405),
    ("wrong method on collection", "delete", "/api/v1/users", {}, 405),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(client, admin_headers, make_user, case):
    _, method, path, kwargs, status = case
    admin_id = client.get("/api/v1/users/me", headers=admin_headers).get_json()["id"]
    kwargs = {**kwargs, "headers": {**admin_headers, **kwargs.get("headers", {})}}
    response = getattr(client, method)(path.format(admin=admin_id), **kwargs)
    body = assert_problem(response, status)
    assert body["instance"] == path.format(admin=admin_id).split("?")[0]
    if status == 405:
        assert "Allow" in response.headers


def test_validation_errors_list_each_field(client, admin_headers):
    response = client.post("/api/v1/users", json={"email": "nope", "name": ""}, headers=admin_headers)
    body = assert_problem(response, 422)
    fields = {e["field"]: e for e in body["errors"]}
    assert set(fields) == {"email", "name", "password"}
    assert all(e["location"] == "json" and e["message"] for e in fields.values())


def test_max_content_length_is_configurable(app, client, admin_headers):
    app.config["MAX_CONTENT_LENGTH"] = 2048
    big = {**GOOD, "name": "x" * 3000}
    assert_problem(client.post("/api/v1/users", json=big, headers=admin_headers), 413)


def test_unhandled_exception_is_a_generic_500_and_logged(app, caplog):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals: password=hunter2")

    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/boom")
    body = assert_problem(response, 500)
    text = response.get_data(as_text=True)
    assert "hunter2" not in text and "RuntimeError" not in text and "<html" not in text.lower()
    assert body["detail"] == "An unexpected error occurred; it has been logged."
    record = next(r for r in caplog.records if "unhandled exception" in r.getMessage())
    assert record.exc_info and record.exc_info[0] is RuntimeError


def test_database_outage_is_503_not_500():
    from app import create_app
    from app.auth.tokens import issue_token

    app = create_app({"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
                      "DATABASE_CONNECT_TIMEOUT": 1})
    with app.app_context():
        token, _ = issue_token(1, "admin")
    response = app.test_client().get("/api/v1/users", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 503)
    assert response.headers["Retry-After"]
