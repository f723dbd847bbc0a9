"""The response checks the personas apply: right bodies pass, each kind of wrong body is named."""

from __future__ import annotations

import pytest

from loadtests.checks import (
    expect,
    no_body,
    page_errors,
    problem_errors,
    profile_errors,
    token_errors,
    user_errors,
)

USER = {"id": 7, "email": "ada@example.com", "name": "Ada", "role": "user", "created_by": 1,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
PAGINATION = {k: 1 for k in ("page", "pages", "total", "current")} | {
    "per_page": 20, "next": "", "prev": "", "first": "/api/v1/users?page=1", "last": "/api/v1/users?page=1"}
PROBLEM = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "No user with id 9.",
           "instance": "/api/v1/users/9"}


def test_right_bodies_pass():
    assert user_errors(USER) == []
    assert user_errors(USER | {"created_by": None}) == []
    assert page_errors({"items": [USER], "pagination": PAGINATION}) == []
    assert token_errors({"access_token": "x.y.z", "token_type": "Bearer", "expires_in": 900}) == []
    assert problem_errors(404)(PROBLEM) == []
    assert no_body(None) == []


@pytest.mark.parametrize(("body", "error"), [
    ([], "user is not a JSON object"),
    ({k: v for k, v in USER.items() if k != "email"}, "user has no 'email'"),
    (USER | {"id": "7"}, "user.id is str"),
    (USER | {"id": True}, "user.id is bool"),
    (USER | {"role": "root"}, "user.role 'root' is not one of"),
    (USER | {"password_hash": "$argon2id$..."}, "user carries a password field"),
])
def test_wrong_users_are_named(body, error):
    assert any(error in e for e in user_errors(body))


def test_a_profile_is_id_and_name_and_may_be_the_full_record():
    assert profile_errors({"id": 7, "name": "Ada"}) == []
    assert profile_errors(USER) == []  # services from before restricted reads show everything


@pytest.mark.parametrize(("body", "error"), [
    ([], "user is not a JSON object"),
    ({"id": 7}, "user has no 'name'"),
    ({"name": "Ada"}, "user has no 'id'"),
    ({"id": 7, "name": "Ada", "email": 3}, "user.email is int"),
    ({"id": 7, "name": "Ada", "password": "x"}, "user carries a password field"),
])
def test_wrong_profiles_are_named(body, error):
    assert any(error in e for e in profile_errors(body))


@pytest.mark.parametrize(("body", "error"), [
    ({"pagination": PAGINATION}, "page has no items list"),
    ({"items": [USER]}, "page has no pagination object"),
    ({"items": [USER], "pagination": {"page": 1}}, "pagination has no 'per_page'"),
    ({"items": [{"id": 1}], "pagination": PAGINATION}, "items[0]: user has no 'email'"),
    ({"items": [USER] * 3, "pagination": PAGINATION | {"per_page": 2}}, "3 items exceed per_page 2"),
])
def test_wrong_pages_are_named(body, error):
    assert error in page_errors(body)


@pytest.mark.parametrize(("body", "error"), [
    ({"access_token": "x", "token_type": "Basic", "expires_in": 900}, "token_type is 'Basic'"),
    ({"access_token": "", "token_type": "Bearer", "expires_in": 900}, "token is empty"),
    ({"access_token": "x", "token_type": "Bearer"}, "token has no 'expires_in'"),
])
def test_wrong_tokens_are_named(body, error):
    assert any(error in e for e in token_errors(body))


def test_a_problem_of_another_status_or_shape_is_wrong():
    assert problem_errors(403)(PROBLEM) == ["problem.status is 404, not 403"]
    assert problem_errors(404)({"error": "not found"})[0] == "problem has no 'type'"


class FakeResponse:
    """What ``expect`` reads of Locust's response: status, headers, text, parsed ``js``."""

    def __init__(self, status: int, body: object, content_type: str = "application/json") -> None:
        self.status_code, self.js, self.text = status, body, str(body)
        self.headers = {"Content-Type": content_type}
        self.succeeded = False

    def success(self) -> None:
        self.succeeded = True


def test_expect_returns_the_body_and_marks_success():
    resp = FakeResponse(200, USER)
    assert expect(resp, 200, user_errors) == USER and resp.succeeded


def test_expect_accepts_an_expected_problem():
    resp = FakeResponse(404, PROBLEM, "application/problem+json")
    assert expect(resp, 404, problem_errors(404)) == PROBLEM and resp.succeeded


@pytest.mark.parametrize(("resp", "status", "message"), [
    (FakeResponse(500, PROBLEM, "application/problem+json"), 200, "expected 200, got 500"),
    (FakeResponse(0, None), 200, "no response"),
    (FakeResponse(200, USER, "text/html"), 200, "200 answer is text/html, not application/json"),
    (FakeResponse(404, PROBLEM, "application/json"), 404, r"not application/problem\+json"),
    (FakeResponse(200, {"id": 1}), 200, "user has no 'email'"),
])
def test_expect_fails_wrong_answers_with_a_reason(resp, status, message):
    check = problem_errors(status) if status >= 400 else user_errors
    with pytest.raises(AssertionError, match=message):
        expect(resp, status, check)
    assert not resp.succeeded
