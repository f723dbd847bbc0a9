"""The fault-injection route: off by default, refused in production, a real 5xx when on."""

from __future__ import annotations

import pytest
from conftest import assert_problem, metric_value

from app import create_app
from app.config import ConfigError, load_config
from loadtests.harness import PRODUCTION_SECRETS

PRODUCTION = {"LOOKOUT_ENV": "production", "SECRET_KEY": "s" * 40, **{
    k: PRODUCTION_SECRETS[k] for k in ("JWT_PRIVATE_KEY", "JWT_KEY_ID")},
              "DATABASE_URL": "postgresql://db.internal/lookout"}


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_production_refuses_fault_injection(value):
    with pytest.raises(ConfigError, match="FAULT_INJECTION: injects server errors"):
        load_config({**PRODUCTION, "FAULT_INJECTION": value})


def test_production_runs_without_it():
    assert load_config({**PRODUCTION, "FAULT_INJECTION": "false"}).FAULT_INJECTION is False


def test_off_by_default_the_route_does_not_exist(sqlite_url):
    app = create_app({"DATABASE_URL": sqlite_url})
    assert "faults" not in app.blueprints
    assert_problem(app.test_client().get("/api/v1/_faults/500"), 404)


def test_on_it_answers_the_asked_server_error_and_counts_in_the_api_sli(sqlite_url):
    app = create_app({"DATABASE_URL": sqlite_url, "FAULT_INJECTION": "true"})
    client = app.test_client()
    assert_problem(client.get("/api/v1/_faults/503"), 503)
    assert_problem(client.get("/api/v1/_faults/404"), 404)  # only 5xx can be injected
    labels = {"method": "GET", "route": "/api/v1/_faults/<int(min=500, max=599):status>", "status": "503"}
    assert metric_value(app, "http_server_requests_total", labels) == 1
    assert "/api/v1/_faults" not in str(client.get("/openapi.json").get_json()["paths"])
