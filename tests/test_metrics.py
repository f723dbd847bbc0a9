"""Prometheus metrics in-process: labels, exclusions, buckets, exemplars, domain counters."""

from __future__ import annotations

import threading
import uuid

import pytest
from conftest import PASSWORD, assert_problem, bearer, metric_value
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from app import create_app
from app.models import Role
from app.telemetry.metrics import REQUEST_BUCKETS, UNMATCHED
from dashboards import load_slo


def series(client, prefix: str = "http_server_") -> set[str]:
    text = client.get("/metrics").get_data(as_text=True)
    return {line.split(" ")[0] for line in text.splitlines() if line.startswith(prefix)}


def test_requests_are_labelled_by_route_template(app, client, make_user):
    user = make_user()
    client.get(f"/api/v1/users/{user.id}", headers=bearer(user))
    client.get("/api/v1/users/999999", headers=bearer(user))
    labels = {"method": "GET", "route": "/api/v1/users/<int:user_id>"}
    assert metric_value(app, "http_server_requests_total", {**labels, "status": "200"}) == 1
    assert metric_value(app, "http_server_requests_total", {**labels, "status": "404"}) == 1
    assert metric_value(app, "http_server_request_duration_seconds_count", {**labels, "status": "200"}) == 1


def test_random_unknown_paths_add_no_series(client):
    client.get("/no/such/path")
    before = series(client)
    for _ in range(1000):
        assert client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}").status_code == 404
    assert series(client) == before
    text = client.get("/metrics").get_data(as_text=True)
    assert f'route="{UNMATCHED}",status="404"}} 1001.0' in text


def test_made_up_methods_add_no_series(client):
    """HTTP allows any token as a method; unknown ones share one label value."""
    client.open("/", method="BREW")
    client.open("/no/such/path", method="BREW")
    before = series(client)
    for _ in range(200):
        method = "X" + uuid.uuid4().hex[:12].upper()
        assert client.open("/", method=method).status_code == 405
        assert client.open(f"/{uuid.uuid4().hex}", method=method).status_code == 404
    assert series(client) == before
    text = client.get("/metrics").get_data(as_text=True)
    assert 'method="_OTHER",route="unmatched",status="405"} 201.0' in text
    assert 'method="BREW"' not in text
    for method in ("GET", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"):  # known ones keep their name
        client.open("/api/v1/users", method=method)
        assert f'method="{method}"' in client.get("/metrics").get_data(as_text=True)


def test_metrics_endpoint_is_not_counted(app, client):
    for _ in range(3):
        client.get("/metrics")
    assert 'route="/metrics"' not in client.get("/metrics").get_data(as_text=True)


def test_buckets_contain_every_slo_threshold():
    slo = load_slo()
    for threshold in (slo.latency_threshold_seconds, slo.loadtest.p95_seconds, slo.loadtest.p99_seconds,
                      slo.login_threshold_seconds):
        assert threshold in REQUEST_BUCKETS


def test_in_flight_counts_running_requests(app):
    inside, release = threading.Event(), threading.Event()

    @app.get("/slow")
    def slow():
        inside.set()
        release.wait(5)
        return {}

    worker = threading.Thread(target=lambda: app.test_client().get("/slow"))
    worker.start()
    assert inside.wait(5)
    try:
        assert metric_value(app, "http_server_requests_in_flight") == 1
    finally:
        release.set()
        worker.join(5)
    assert metric_value(app, "http_server_requests_in_flight") == 0


def test_in_flight_returns_to_zero_after_errors(app, client):
    @app.get("/boom")
    def boom():
        raise RuntimeError("x")

    client.get("/boom")
    client.post("/api/v1/users", data="{", headers={"Content-Type": "application/json"})
    assert metric_value(app, "http_server_requests_in_flight") == 0
    assert metric_value(app, "http_server_requests_total", {"method": "GET", "route": "/boom",
                                                            "status": "500"}) == 1


def test_build_info(app):
    assert metric_value(app, "lookout_build_info", {"version": app.extensions["lookout.version"],
                                                    "commit": "unknown", "environment": "testing"}) == 1


def test_database_time_by_operation(app, client, admin_headers):
    client.get("/api/v1/users", headers=admin_headers)
    client.post("/api/v1/users", headers=admin_headers,
                json={"email": "db@example.com", "name": "Db", "password": "long-enough"})
    for operation in ("SELECT", "INSERT"):
        assert metric_value(app, "db_client_operation_duration_seconds_count", {"operation": operation}) >= 1
    from app.extensions import db

    assert metric_value(app, "db_client_connections_in_use") == db.engine.pool.checkedout()
    db.session.remove()  # the test's app context holds the session between requests
    assert metric_value(app, "db_client_connections_in_use") == db.engine.pool.checkedout() == 0


def test_domain_counters(app, client, make_user, admin_headers):
    user = make_user()
    client.post("/api/v1/users", headers=admin_headers,
                json={"email": "new@example.com", "name": "New", "password": "long-enough"})
    client.post("/api/v1/users", headers=admin_headers,  # duplicate: not counted as created
                json={"email": "new@example.com", "name": "New", "password": "long-enough"})
    client.post("/api/v1/auth/token", json={"email": user.email, "password": "wrong-password"})
    client.post("/api/v1/users", headers={"Authorization": "Bearer nonsense"}, json={})
    client.delete(f"/api/v1/users/{user.id}", headers=bearer(user))
    assert metric_value(app, "lookout_users_created_total") == 1
    for reason in ("credentials", "token", "forbidden"):
        assert metric_value(app, "lookout_auth_failures_total", {"reason": reason}) == 1, reason


def test_exemplar_carries_the_trace_id_of_a_sampled_request(traced_app, span_exporter):
    client = traced_app.test_client()
    client.get("/api/v1/users")  # anonymous: a 401, still a sampled request of the route
    server_span = next(s for s in span_exporter.get_finished_spans() if s.name == "GET /api/v1/users")
    trace_id = format(server_span.context.trace_id, "032x")
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.content_type.startswith("application/openmetrics-text")
    exemplars = [s.exemplar for family in text_string_to_metric_families(response.get_data(as_text=True))
                 if family.name == "http_server_request_duration_seconds"
                 for s in family.samples if s.exemplar and s.labels.get("route") == "/api/v1/users"]
    assert exemplars and exemplars[0].labels["trace_id"] == trace_id


def test_plain_text_scrape_has_no_exemplars(traced_app):
    client = traced_app.test_client()
    client.get("/api/v1/users")
    text = client.get("/metrics").get_data(as_text=True)
    assert "trace_id" not in text and "# EOF" not in text


@pytest.mark.parametrize("port, status", [("9100", 200), ("8000", 404)])
def test_metrics_port_restricts_the_endpoint(database_url, port, status):
    app = create_app({"DATABASE_URL": database_url, "METRICS_PORT": 9100})
    response = app.test_client().get("/metrics", environ_overrides={"SERVER_PORT": port})
    assert response.status_code == status


@pytest.mark.parametrize("path", ["/", "/livez", "/readyz", "/docs", "/openapi.json", "/api/v1/users",
                                  "/api/v1/users/me", "/nowhere"])
def test_the_metrics_port_serves_nothing_but_metrics(database_url, admin_headers, path):
    app = create_app({"DATABASE_URL": database_url, "METRICS_PORT": 9100})
    client = app.test_client()
    on_metrics_port = {"SERVER_PORT": "9100"}
    assert_problem(client.get(path, headers=admin_headers, environ_overrides=on_metrics_port), 404)
    assert_problem(client.post(path, json={}, headers=admin_headers, environ_overrides=on_metrics_port), 404)
    assert client.get("/metrics", environ_overrides=on_metrics_port).status_code == 200
    on_main_port = client.get(path, headers=admin_headers, environ_overrides={"SERVER_PORT": "8000"})
    assert on_main_port.status_code != 404 or path == "/nowhere"


def test_telemetry_can_be_switched_off(database_url, span_exporter):
    app = create_app({"DATABASE_URL": database_url, "TELEMETRY_ENABLED": False},
                     tracer_provider=span_exporter.provider)
    client = app.test_client()
    assert client.get("/api/v1/users").status_code == 401
    assert client.get("/metrics").status_code == 404
    assert span_exporter.get_finished_spans() == ()
    assert client.get("/livez").headers["X-Request-ID"]


def test_token_login_counts_no_failure(app, client, make_user):
    user = make_user(Role.USER)
    response = client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 200
    assert metric_value(app, "lookout_auth_failures_total", {"reason": "credentials"}) == 0


def test_counters_of_a_fixed_label_set_start_at_zero(client):
    """Their series exist before the first error, so rates over them have data from the start."""
    text = client.get("/metrics").get_data(as_text=True)
    for operation in ("SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"):
        assert f'db_client_errors_total{{operation="{operation}"}} 0.0' in text
        assert f'db_client_operation_duration_seconds_count{{operation="{operation}"}} 0.0' in text
    for reason in ("credentials", "token", "forbidden"):
        assert f'lookout_auth_failures_total{{reason="{reason}"}} 0.0' in text
    for limit in ("login", "login-failures", "writes"):
        assert f'lookout_rate_limited_total{{limit="{limit}"}} 0.0' in text
