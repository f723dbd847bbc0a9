"""Liveness never depends on the database; readiness does, within its timeout."""

from __future__ import annotations

import time

import pytest
from conftest import assert_problem

from app import create_app

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/none"  # nothing listens on port 1
MYSQL_UNREACHABLE = "mysql://root@127.0.0.1:1/none"


def test_livez_and_readyz_ok(client):
    assert client.get("/livez").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ok", "checks": {"database": "ok"}}


@pytest.mark.parametrize("url", [UNREACHABLE, MYSQL_UNREACHABLE])
def test_database_down_fails_readiness_fast_but_not_liveness(url):
    app = create_app({"DATABASE_URL": url, "DATABASE_CONNECT_TIMEOUT": 1})
    client = app.test_client()
    started = time.monotonic()
    body = assert_problem(client.get("/readyz"), 503)
    assert time.monotonic() - started < 2 + 1  # generous upper bound: a hang would be 30 s+
    assert body["checks"] == {"database": "failing"}
    assert client.get("/livez").status_code == 200


def test_root_describes_the_service(client, admin_headers):
    from app.schemas import ServiceInfo

    response = client.get("/")
    body = response.get_json()
    assert response.mimetype == "application/json" and ServiceInfo().validate(body) == {}
    assert body["service"] == "lookout" and body["version"] and body["commit"]
    for link in body["links"].values():
        assert client.get(link, headers=admin_headers).status_code == 200, link
    # The document is built once per mount point: another prefix gets its own links.
    mounted = client.get("/", base_url="http://localhost/lookout").get_json()
    assert mounted["links"] == {name: "/lookout" + link for name, link in body["links"].items()}
    assert client.get("/").get_json() == body


def test_unmigrated_database_is_not_ready(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"})
    body = assert_problem(app.test_client().get("/readyz"), 503)
    assert "not migrated" in body["detail"]


def test_database_behind_this_release_is_not_ready(app, client):
    from app.extensions import db

    client.get("/readyz")  # loads the revisions
    known, heads = app.extensions["lookout.revisions"]
    # Pretend this release ships one more migration than the database has.
    app.extensions["lookout.revisions"] = (known | {"f00dfeed0001"}, frozenset({"f00dfeed0001"}))
    body = assert_problem(client.get("/readyz"), 503)
    assert "this release needs f00dfeed0001" in body["detail"]
    app.extensions["lookout.revisions"] = (known, heads)
    assert client.get("/readyz").status_code == 200
    db.session.remove()


def test_database_ahead_of_this_release_stays_ready(app, client):
    """During a rolling update the new release migrates first; old pods must keep serving."""
    from sqlalchemy import text

    from app.extensions import db

    with db.engine.begin() as conn:
        [revision] = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
        conn.execute(text("UPDATE alembic_version SET version_num = 'newer0release'"))
    try:
        assert client.get("/readyz").status_code == 200
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
