"""Security headers on every response (errors and docs included), and CORS closed unless
configured."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import tempfile

import pytest
from conftest import PASSWORD, service_missing

from app import create_app
from app.config import ConfigError, load_config
from app.security import API_CSP, HEADERS
from loadtests.harness import PRODUCTION_SECRETS

ORIGIN = "https://app.example.com"


@pytest.fixture
def database_url(sqlite_url):
    """Headers do not depend on the database."""
    return sqlite_url


def with_a_failing_route(app):
    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("a bug")

    return app


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/", 200),
        ("GET", "/livez", 200),
        ("GET", "/readyz", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/metrics", 200),
        ("GET", "/api/v1/users", 401),
        ("GET", "/api/v1/users/999", 401),
        ("GET", "/nowhere", 404),
        ("PUT", "/api/v1/users", 405),
        ("DELETE", "/api/v1/users/1", 401),
        ("POST", "/api/v1/auth/token", 415),
        ("GET", "/api/v1/boom", 500),
        ("GET", "/docs/static/swagger-ui.css", 200),
    ],
)
def test_every_response_carries_the_security_headers(database_url, method, path, status):
    app = with_a_failing_route(create_app({"DATABASE_URL": database_url}))
    response = app.test_client().open(path, method=method)
    assert response.status_code == status
    for name, value in HEADERS.items():
        assert response.headers.getlist(name) == [value], name  # once, not added twice
    assert response.headers.getlist("Strict-Transport-Security") == ["max-age=31536000"]
    assert response.headers.getlist("Content-Security-Policy") == [API_CSP]
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Set-Cookie" not in response.headers  # stateless: no session cookie, ever


def test_a_header_the_view_set_is_kept(database_url):
    app = create_app({"DATABASE_URL": database_url})

    @app.get("/api/v1/framed")
    def framed():
        return {}, 200, {"x-frame-options": "SAMEORIGIN", "Cache-Control": "max-age=60"}

    response = app.test_client().get("/api/v1/framed")
    assert response.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert response.headers.getlist("Cache-Control") == ["max-age=60"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_api_keeps_no_session(database_url):
    """A view that tries to keep state in Flask's cookie session fails loudly, not silently."""
    from flask import session

    app = create_app({"DATABASE_URL": database_url})

    @app.get("/api/v1/remember")
    def remember():
        session["user"] = 1
        return {}

    response = app.test_client().get("/api/v1/remember")
    assert response.status_code == 500  # Flask's null session refuses the write
    assert "Set-Cookie" not in response.headers


def test_token_responses_are_not_cached(client, make_user):
    user = make_user()
    response = client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_rate_limited_answers_carry_them_too(database_url, make_user):
    user = make_user()
    app = create_app({"DATABASE_URL": database_url, "RATE_LIMIT_LOGIN": "1 per minute"})
    client = app.test_client()
    client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    response = client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 429
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_docs_csp_allows_exactly_its_inline_script_and_style(client):
    response = client.get("/docs")
    csp = response.headers["Content-Security-Policy"]
    html = response.get_data()
    inline = re.findall(rb"<(script|style)>(.*?)</\1>", html, re.DOTALL)
    assert {tag for tag, _ in inline} == {b"script", b"style"}
    for tag, body in inline:
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        directive = next(d for d in csp.split("; ") if d.startswith(f"{tag.decode()}-src "))
        assert f"'sha256-{digest}'" in directive
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp


def test_hsts_can_be_turned_off(database_url):
    response = create_app({"DATABASE_URL": database_url, "HSTS_SECONDS": "0"}).test_client().get("/livez")
    assert "Strict-Transport-Security" not in response.headers


def test_cors_is_closed_by_default(client):
    simple = client.get("/api/v1/users", headers={"Origin": ORIGIN})
    preflight = client.options(
        "/api/v1/users",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    for response in (simple, preflight):
        assert not [h for h in response.headers.keys() if h.startswith("Access-Control-")]


def test_cors_opens_for_the_configured_origins_only(database_url):
    app = create_app({"DATABASE_URL": database_url, "CORS_ORIGINS": f"{ORIGIN}, https://admin.example.com"})
    client = app.test_client()
    allowed = client.get("/api/v1/users", headers={"Origin": ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in allowed.headers["Vary"]
    assert "X-Request-ID" in allowed.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    preflight = client.options(
        "/api/v1/users",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    other = client.get("/api/v1/users", headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Origin" not in client.get("/livez", headers={"Origin": ORIGIN}).headers


@pytest.mark.parametrize(
    "origins, message",
    [
        ("*", "list the origins"),
        ("app.example.com", "is not an origin"),
        ("https://app.example.com/path", "is not an origin"),
    ],
)
def test_unsafe_or_malformed_origins_are_refused(origins, message):
    environ = {
        "LOOKOUT_ENV": "production",
        "SECRET_KEY": "s" * 40,
        "JWT_PRIVATE_KEY": PRODUCTION_SECRETS["JWT_PRIVATE_KEY"],
        "JWT_KEY_ID": "k1",
        "DATABASE_URL": "postgresql://db/lookout",
        "CORS_ORIGINS": origins,
    }
    with pytest.raises(ConfigError, match=f"CORS_ORIGINS.*{message}"):
        load_config(environ)


@pytest.mark.slow
def test_swagger_ui_renders_under_its_csp_in_a_real_browser(database_url):
    """Headless Chromium loads /docs from a real gunicorn: Swagger UI draws the operations and
    the console reports no Content-Security-Policy violation."""
    from loadtests.harness import GunicornServer

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        service_missing("chromium is not installed (Debian package chromium)")
    with GunicornServer({"DATABASE_URL": database_url}) as server, tempfile.TemporaryDirectory() as profile:
        run = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=10000",
                "--dump-dom",
                f"{server.url}/docs",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert "opblock-summary" in run.stdout, run.stderr[-3000:]  # operations were drawn from the spec
    violations = [line for line in run.stderr.splitlines() if "Content Security Policy" in line]
    assert violations == []
