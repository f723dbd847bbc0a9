"""The spec generated from the code is valid OpenAPI 3 and documents every route; /docs works offline."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from app import create_app


@pytest.fixture(scope="module")
def spec_client():
    return create_app({}).test_client()


def test_spec_is_valid_openapi_3(spec_client):
    spec = spec_client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    validate(spec)


def test_each_schema_is_a_single_component(spec_client):
    """apispec renames a schema it meets twice (UserFull1); references would then diverge."""
    names = spec_client.get("/openapi.json").get_json()["components"]["schemas"]
    assert [n for n in names if n[-1].isdigit()] == []


@pytest.mark.parametrize("body, valid", [
    ({}, False),
    ({"current_password": "secret-enough"}, False),  # changes nothing: refused by the service too
    ({"name": "Ada"}, True),
    ({"password": "a-new-password", "current_password": "the-old-one"}, True),
])
def test_the_patch_schema_asks_for_a_change_as_the_service_does(spec_client, body, valid):
    from jsonschema import Draft4Validator

    spec = spec_client.get("/openapi.json").get_json()
    assert Draft4Validator(spec["components"]["schemas"]["UserPatch"]).is_valid(body) is valid
    app = spec_client.application
    with app.app_context():
        from app.schemas import UserPatch

        assert (UserPatch().validate(body) == {}) is valid


def test_every_api_route_is_documented(spec_client):
    spec = spec_client.get("/openapi.json").get_json()
    app = spec_client.application
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("openapi.", "docs_assets.", "metrics.")):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)
    assert "/metrics" not in spec["paths"]  # operational, not part of the API


def test_writes_declare_bearer_security_and_errors(spec_client):
    spec = spec_client.get("/openapi.json").get_json()
    create = spec["paths"]["/api/v1/users"]["post"]
    assert create["security"] == [{"BearerAuth": []}]
    assert {"201", "401", "409", "422"} <= create["responses"].keys()
    for view in ("UserPublic", "UserFull"):
        assert "password" not in spec["components"]["schemas"][view]["properties"]
    assert {"email", "role"}.isdisjoint(spec["components"]["schemas"]["UserPublic"]["properties"])


def test_docs_page_and_its_assets_are_served_locally(spec_client):
    page = spec_client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:href|src)="(/docs/static/[^"]+)"', html)
    assert len(assets) >= 3
    assert "cdn." not in html
    for asset in assets:
        response = spec_client.get(asset)
        assert response.status_code == 200 and len(response.data) > 500, asset


def test_errors_are_documented_as_problem_json(spec_client):
    spec = spec_client.get("/openapi.json").get_json()
    error_media = {media for ops in spec["paths"].values() for op in ops.values()
                   for status, response in op["responses"].items() if status[0] in "45"
                   for media in response.get("content", {})}
    assert error_media == {"application/problem+json"}
    create = spec["paths"]["/api/v1/users"]["post"]["responses"]
    assert {"400", "413", "415", "503"} <= create.keys()
    assert "503" not in spec["paths"]["/livez"]["get"]["responses"]


def test_real_error_bodies_carry_the_documented_fields(spec_client):
    spec = spec_client.get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    response = spec_client.post("/api/v1/auth/token", json={"email": ""})
    assert response.status_code == 422
    body = response.get_json(force=True)
    assert set(schemas["ValidationProblem"]["required"]) <= body.keys()
    for error in body["errors"]:
        assert set(schemas["FieldError"]["required"]) <= error.keys()


def test_ensure_sync_is_remembered_and_still_refuses_async_views_without_asgiref(app):
    """LookoutAPI remembers Flask's ensure_sync answer per function; the answer is Flask's."""
    def hook() -> None:
        return None

    async def view() -> str:
        return "async"

    assert app.ensure_sync(hook) is hook and hook in app._synced
    with pytest.raises(RuntimeError, match="async"):  # Flask without its async extra
        app.ensure_sync(view)
    with pytest.raises(RuntimeError, match="async"):  # not remembered as if it were sync
        app.ensure_sync(view)


def test_flask_answers_ensure_sync_from_the_function_alone():
    """LookoutAPI remembers Flask's ensure_sync answer per function, which is right only while
    that answer depends on the function alone: a plain function comes back as it is."""
    from importlib.metadata import version

    from flask import Flask

    def view() -> str:
        return "sync"

    assert Flask.ensure_sync(Flask(__name__), view) is view, (
        f"Flask {version('flask')} no longer returns a plain function from ensure_sync as it is; "
        "LookoutAPI.ensure_sync (app/docs.py) remembers the answer per function: check it still may")
