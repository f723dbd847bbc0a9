"""The database circuit breaker: 503 at once while the database is down, one trial per interval,
closed again by any statement that succeeds."""

from __future__ import annotations

import pytest
from conftest import add_admin, assert_problem, migrate
from sqlalchemy import event

from app import breaker as breaker_module
from app import create_app
from app.auth.tokens import issue_token
from app.breaker import KEY, DatabaseBreaker
from app.extensions import db


class Clock:
    """The breaker's clock, moved by the test alone: a slow machine cannot open a second trial
    between two calls the test means to fall in one interval."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(breaker_module, "time", clock)  # app.breaker's own name for the time module
    return clock


def test_the_state_machine(clock):
    breaker = DatabaseBreaker(interval=0.2)
    assert breaker.allow() and not breaker.is_open
    breaker.failed()
    assert breaker.is_open and not breaker.allow() and not breaker.allow()
    clock.advance(0.19)
    assert not breaker.allow()
    clock.advance(0.06)
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one per interval
    breaker.failed()  # the trial failed too
    assert not breaker.allow()
    breaker.succeeded()
    assert not breaker.is_open and breaker.allow()


def test_an_unreachable_database_is_asked_once_per_interval_then_found_again(tmp_path, clock):
    missing = tmp_path / "not-yet" / "lookout.db"  # SQLite cannot open a file in a missing folder
    app = create_app({"DATABASE_URL": f"sqlite:///{missing}", "DATABASE_FAILFAST_SECONDS": "0.5"})
    client = app.test_client()
    attempts = []
    with app.app_context():
        event.listen(db.engine, "do_connect", lambda *args: attempts.append(1))

    with app.app_context():
        early = {"Authorization": f"Bearer {issue_token(1, 'admin')[0]}"}  # checked against the database
    assert_problem(client.get("/api/v1/users/1", headers=early), 503)  # a real failure opens the breaker
    assert app.extensions[KEY].is_open and attempts
    tried = len(attempts)
    for _ in range(20):
        response = client.get("/api/v1/users/1", headers=early)
        assert_problem(response, 503)
        assert response.headers["Retry-After"]
    assert len(attempts) == tried  # refused without asking the database
    assert client.get("/livez").status_code == 200

    missing.parent.mkdir()
    migrate(f"sqlite:///{missing}")
    add_admin(f"sqlite:///{missing}")
    with app.app_context():
        token, _ = issue_token(1, "admin")
    headers = {"Authorization": f"Bearer {token}"}
    clock.advance(0.6)
    assert client.get("/api/v1/users", headers=headers).status_code == 200  # the trial finds it back
    assert not app.extensions[KEY].is_open
    assert client.get("/api/v1/users/2", headers=headers).status_code == 404


def test_it_can_be_turned_off(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/missing/x.db", "DATABASE_FAILFAST_SECONDS": "0"})
    assert KEY not in app.extensions
