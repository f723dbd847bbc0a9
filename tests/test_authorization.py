"""Every cell of the authorization rules (app/api/policy.py) against the real app, on SQLite and
PostgreSQL; every answer that carries a user checked against the spec's schema of its view; the
README's table generated from the same rules."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import PASSWORD, assert_problem, bearer, metric_value
from openapi_schema_validator import OAS30Validator

from app.api.policy import RULES, Caller, Operation, View, caller_of
from app.models import Role, User
from app.policy_table import README, policy_table, rewrite

NEW = {"email": "fresh@example.com", "name": "Fresh", "password": "long-enough-pw"}
CHANGES = {
    Operation.PATCH_PROFILE: {"name": "Renamed", "email": "moved@example.com", "current_password": PASSWORD},
    Operation.PATCH_PASSWORD: {"password": "a-brand-new-one", "current_password": PASSWORD},
    Operation.PATCH_ROLE: {"role": "admin"},
}
CELLS = [(operation, caller) for operation, cells in RULES.items() for caller in cells]


@pytest.fixture
def cast(make_user) -> dict[Caller, User | None]:
    """One account of each kind around ``target``: its creator, itself, another user, an admin."""
    from app.extensions import db

    admin, creator, other = make_user(Role.ADMIN), make_user(), make_user()
    target = make_user(email="target@example.com")
    target.created_by_id = creator.id
    db.session.commit()
    return {Caller.ANONYMOUS: None, Caller.USER: other, Caller.SELF: target, Caller.CREATOR: creator,
            Caller.ADMIN: admin, "target": target}  # type: ignore[dict-item]


def call(client, operation: Operation, target: int, headers: dict[str, str]) -> Any:
    users = "/api/v1/users"
    if operation is Operation.LIST:
        return client.get(users, headers=headers)
    if operation is Operation.GET:
        return client.get(f"{users}/{target}", headers=headers)
    if operation is Operation.ME:
        return client.get(f"{users}/me", headers=headers)
    if operation is Operation.CREATE:
        return client.post(users, json=NEW, headers=headers)
    if operation is Operation.CREATE_ADMIN:
        return client.post(users, json={**NEW, "role": "admin"}, headers=headers)
    if operation is Operation.DELETE:
        return client.delete(f"{users}/{target}", headers=headers)
    return client.patch(f"{users}/{target}", json=CHANGES[operation], headers=headers)


@pytest.fixture(scope="module")
def view_schemas() -> dict[View, OAS30Validator]:
    from app import create_app

    spec = create_app({}).test_client().get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    return {View.PUBLIC: OAS30Validator(schemas["UserPublic"]),
            View.FULL: OAS30Validator(schemas["UserFull"])}


@pytest.mark.parametrize("operation, caller", CELLS, ids=[f"{o.name}-{c}" for o, c in CELLS])
def test_every_cell_of_the_rules(client, app, cast, view_schemas, operation, caller):
    rule = RULES[operation][caller]
    actor, target = cast[caller], cast["target"]
    assert caller_of(actor, target if Caller.SELF in RULES[operation] else None) is caller
    response = call(client, operation, target.id, bearer(actor) if actor else {})
    if rule.status >= 400:
        body = assert_problem(response, rule.status)
        if rule.status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert metric_value(app, "lookout_auth_failures_total", {"reason": "token"}) == 1
        else:
            assert body["detail"] == rule.detail
            assert metric_value(app, "lookout_auth_failures_total", {"reason": "forbidden"}) == 1
        return
    assert response.status_code == rule.status, response.get_json()
    if rule.view is None:
        assert response.data == b""
        return
    body = response.get_json()
    users = body["items"] if operation is Operation.LIST else [body]
    assert users
    for user in users:
        view_schemas[rule.view].validate(user)  # raises on any difference from the view's schema
        other = View.FULL if rule.view is View.PUBLIC else View.PUBLIC
        assert not view_schemas[other].is_valid(user)  # so oneOf in the spec picks exactly one
    if rule.view is View.PUBLIC:
        assert set(body) == {"id", "name"}


def test_the_table_covers_every_operation_and_caller():
    for operation in Operation:
        cells = RULES[operation]
        assert {Caller.ANONYMOUS, Caller.USER, Caller.ADMIN} <= cells.keys(), operation
        assert all(rule.status == 401 for caller, rule in cells.items() if caller is Caller.ANONYMOUS)
        assert all(rule.detail for rule in cells.values() if rule.status == 403), operation


def test_creator_rights_never_reach_a_promoted_account(client, make_user, admin_headers):
    creator = make_user()
    created = client.post("/api/v1/users", json=NEW, headers=bearer(creator)).get_json()
    assert client.patch(f"/api/v1/users/{created['id']}", json={"role": "admin"},
                        headers=admin_headers).status_code == 200
    for change in ({"email": "elsewhere@example.com"}, {"name": "Not an admin any more"}):
        body = assert_problem(client.patch(f"/api/v1/users/{created['id']}", json=change,
                                           headers=bearer(creator)), 403)
        assert body["detail"] == "You can change only yourself and users you created."
    stored = client.get(f"/api/v1/users/{created['id']}", headers=admin_headers).get_json()
    assert stored["email"] == NEW["email"] and stored["name"] == NEW["name"]


def test_creator_rights_end_with_the_creators_demotion(client, make_user, admin_headers):
    """An admin creates an admin, then is demoted: the account they created is now above them."""
    creator = make_user(Role.ADMIN)
    created = client.post("/api/v1/users", json={**NEW, "role": "admin"}, headers=bearer(creator)).get_json()
    assert client.patch(f"/api/v1/users/{creator.id}", json={"role": "user"},
                        headers=admin_headers).status_code == 200
    assert_problem(client.patch(f"/api/v1/users/{created['id']}", json={"name": "Mine still?"},
                                headers=bearer(creator)), 403)
    peer = client.post("/api/v1/users", json={**NEW, "email": "peer@example.com"},
                       headers=bearer(creator)).get_json()
    assert client.patch(f"/api/v1/users/{peer['id']}", json={"name": "Mine"},  # same role: still theirs
                        headers=bearer(creator)).status_code == 200


def test_nobody_but_the_user_and_admins_reads_email_or_role(client, make_user, admin_headers):
    """Whatever was read before (an admin's full view first, then a user's), the view follows the
    reader, never the order of requests."""
    target, reader = make_user(), make_user()
    for headers, full in ((admin_headers, True), (bearer(reader), False), (bearer(target), True),
                          (bearer(reader), False)):
        body = client.get(f"/api/v1/users/{target.id}", headers=headers).get_json()
        assert ("email" in body and "role" in body) is full, body


def test_me_is_the_callers_full_record(client, make_user):
    me = make_user(email="me@example.com")
    body = client.get("/api/v1/users/me", headers=bearer(me)).get_json()
    assert body["id"] == me.id and body["email"] == "me@example.com" and body["role"] == "user"


def test_the_readme_table_is_generated_from_the_rules():
    text = README.read_text()
    assert policy_table() in text, "run `make docs`"


def test_a_changed_rule_makes_the_readme_table_stale(monkeypatch, tmp_path):
    from app.api import policy

    readme = tmp_path / "README.md"
    readme.write_text(README.read_text())
    monkeypatch.setitem(policy.RULES[Operation.GET], Caller.USER, policy.FULL)
    assert policy_table() not in README.read_text()
    assert rewrite(readme) is True and policy_table() in readme.read_text()
