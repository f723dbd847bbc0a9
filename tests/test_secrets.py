"""Passwords, hashes, tokens and configured secrets never appear in logs or responses.

A real gunicorn runs at LOG_LEVEL=DEBUG (the most it ever logs) through logins, writes, errors
and an unreachable Redis whose URL carries a password; once it has stopped (its processes write
their lines from a background thread, and flush them all as they exit), every byte it wrote is
searched."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from conftest import PASSWORD, add_admin, bearer, migrate

from app import create_app
from app.extensions import db
from app.models import Role
from loadtests.harness import PRODUCTION_SECRETS, GunicornServer, free_port

USER_PASSWORD = "user-password-5b1e9d"
NEW_PASSWORD = "changed-password-77c2"
WRONG_PASSWORD = "wrong-password-0aa1"
REDIS_PASSWORD = "redis-password-93fd"


@pytest.mark.slow
def test_no_secret_reaches_a_log_line_or_a_response(tmp_path):
    sqlite_url = f"sqlite:///{tmp_path / 'secrets.db'}"
    migrate(sqlite_url)
    add_admin(sqlite_url)
    env = {
        "DATABASE_URL": sqlite_url,
        "LOG_LEVEL": "DEBUG",
        "RATE_LIMIT_STORAGE_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8",
    }
    bodies: list[str] = []
    log_path = tmp_path / "gunicorn.log"
    with GunicornServer(env, workers=1, threads=2, log_path=log_path) as server:
        url = server.url

        def call(method: str, path: str, **kwargs) -> requests.Response:
            response = requests.request(method, f"{url}{path}", timeout=10, **kwargs)
            bodies.append(json.dumps(dict(response.headers)) + response.text)
            return response

        token = call("POST", "/api/v1/auth/token", json={"email": "admin@example.com", "password": PASSWORD})
        auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
        created = call(
            "POST",
            "/api/v1/users",
            headers=auth,
            json={"email": "u@example.com", "name": "U", "password": USER_PASSWORD},
        )
        user = created.json()["id"]
        call(
            "POST",
            "/api/v1/users",
            headers=auth,  # duplicate: an IntegrityError on the way
            json={"email": "u@example.com", "name": "U", "password": USER_PASSWORD},
        )
        call("POST", "/api/v1/auth/token", json={"email": "u@example.com", "password": WRONG_PASSWORD})
        call("POST", "/api/v1/auth/token", json={"email": "u@example.com", "password": USER_PASSWORD})
        call("PATCH", f"/api/v1/users/{user}", headers=auth, json={"password": NEW_PASSWORD})
        call("PATCH", f"/api/v1/users/{user}", headers=auth, json={"password": "short"})
        call(
            "POST",
            "/api/v1/auth/token",
            data='{"password": "' + WRONG_PASSWORD + '"',
            headers={"Content-Type": "application/json"},
        )
        call("GET", f"/api/v1/users/{user}", headers=auth)
        call("GET", "/api/v1/users")
        call("DELETE", f"/api/v1/users/{user}", headers={"Authorization": "Bearer not-a-jwt"})
    log = log_path.read_text()

    assert "Shutting down: Master" in log, "the server did not stop cleanly: its log may be cut short"
    assert "DEBUG" in log and "lookout.access" in log, "the log was not captured"
    secrets = {
        "a password": [PASSWORD, USER_PASSWORD, NEW_PASSWORD, WRONG_PASSWORD, "short"],
        "a password hash": ["$argon2"],
        "a configured secret": [
            PRODUCTION_SECRETS["SECRET_KEY"],
            PRODUCTION_SECRETS["JWT_PRIVATE_KEY"].splitlines()[1],  # the key's base64 body
            REDIS_PASSWORD,
        ],
        "a token": [auth["Authorization"].split()[1]],
    }
    for what, values in secrets.items():
        for value in values:
            assert value not in log, f"{what} was logged: {value!r}"
            if what != "a token":
                assert not any(value in body for body in bodies), f"{what} was returned: {value!r}"


@contextmanager
def write_lock(url: str) -> Iterator[None]:
    """Hold the users table's write lock from another connection (reads still work)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    elif url.startswith("mysql"):
        # Every user row locked: the insert's foreign-key check on its creator (an admin) waits.
        import pymysql
        from sqlalchemy.engine import make_url

        server = make_url(url)
        conn = pymysql.connect(host=server.host, port=server.port or 3306, user=server.username,
                               password=server.password or "", database=server.database)
        conn.begin()
        with conn.cursor() as cursor:
            cursor.execute("SELECT id FROM users FOR UPDATE")
    else:
        import psycopg

        conn = psycopg.connect(url.replace("+psycopg", ""))
        conn.execute("LOCK TABLE users IN EXCLUSIVE MODE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def test_a_failed_statement_is_logged_without_its_parameters(database_url, make_user, caplog):
    """A write that times out on a lock is a 503, logged with its exception; the exception
    carries the statement's parameters (here a password hash) unless the engine hides them."""
    app = create_app(
        {
            "DATABASE_URL": database_url,
            "DATABASE_CONNECT_TIMEOUT": "1",
            "DATABASE_STATEMENT_TIMEOUT_MS": "300",
            "DATABASE_READ_TIMEOUT": "2",
        }
    )
    with app.app_context():
        headers = bearer(make_user(Role.ADMIN, email="admin@example.com"))
        with write_lock(database_url):
            response = app.test_client().post(
                "/api/v1/users",
                headers=headers,
                json={"email": "x@example.com", "name": "X", "password": USER_PASSWORD},
            )
        db.session.remove()
        db.engine.dispose()
    assert response.status_code == 503
    records = [r for r in caplog.records if r.exc_info]
    assert records, "the failure was not logged"
    logged = caplog.text + "".join(str(r.exc_info[1]) for r in records)
    assert "$argon2" not in logged and "x@example.com" not in logged
