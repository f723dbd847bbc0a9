"""``flask users bootstrap-admin``: the deployment's first admin, idempotent, never silently reset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Role, User

EMAIL, PASSWORD = "Root@Example.com", "first-admin-password"


def bootstrap(app: Any, monkeypatch: pytest.MonkeyPatch, *extra: str, **env: str) -> Any:
    for name in ("EMAIL", "PASSWORD", "PASSWORD_FILE", "NAME"):
        monkeypatch.delenv(f"LOOKOUT_BOOTSTRAP_ADMIN_{name}", raising=False)
    for name, value in {"EMAIL": EMAIL, "PASSWORD": PASSWORD, **env}.items():
        if value is not None:
            monkeypatch.setenv(f"LOOKOUT_BOOTSTRAP_ADMIN_{name}", value)
    return app.test_cli_runner().invoke(args=["users", "bootstrap-admin", *extra])


def admins() -> list[tuple[str, str, int]]:
    db.session.expire_all()
    return [(u.email, u.password_hash, u.token_version)
            for u in db.session.scalars(select(User).where(User.role == Role.ADMIN))]


def can_log_in(app: Any, password: str) -> bool:
    answer = app.test_client().post("/api/v1/auth/token", json={"email": EMAIL, "password": password})
    return answer.status_code == 200


def test_creates_the_admin_and_a_rerun_changes_nothing(app, monkeypatch):
    first = bootstrap(app, monkeypatch)
    assert first.exit_code == 0, first.output
    assert "created bootstrap admin root@example.com" in first.output
    created = admins()
    assert [email for email, *_ in created] == ["root@example.com"] and can_log_in(app, PASSWORD)

    again = bootstrap(app, monkeypatch)
    assert again.exit_code == 0, again.output
    assert "exists" in again.output and "unchanged" in again.output
    assert admins() == created  # same row, same hash (no rehash), same token version
    assert db.session.scalar(select(func.count()).select_from(User)) == 1


def test_password_from_a_mounted_file(app, monkeypatch, tmp_path: Path):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")  # `echo` and editors add a newline; it is not part of it
    result = bootstrap(app, monkeypatch, PASSWORD=None, PASSWORD_FILE=str(secret))
    assert result.exit_code == 0, result.output
    assert can_log_in(app, PASSWORD)


def test_a_changed_password_is_not_overwritten(app, monkeypatch, caplog):
    assert bootstrap(app, monkeypatch).exit_code == 0
    before = admins()
    with caplog.at_level(logging.WARNING):
        result = bootstrap(app, monkeypatch, PASSWORD="a-different-password")
    assert result.exit_code == 0, result.output  # the migration Job still succeeds
    assert admins() == before and can_log_in(app, PASSWORD) and not can_log_in(app, "a-different-password")
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "NOT overwritten" in warning and "--reset-password" in warning
    assert "PATCH /api/v1/users/" in warning


def test_reset_password_sets_it_on_purpose(app, monkeypatch):
    assert bootstrap(app, monkeypatch).exit_code == 0
    result = bootstrap(app, monkeypatch, "--reset-password", PASSWORD="a-different-password")
    assert result.exit_code == 0, result.output
    assert can_log_in(app, "a-different-password") and not can_log_in(app, PASSWORD)
    assert admins()[0][2] == 1  # tokens issued before the reset stop working


def test_an_existing_plain_user_is_not_promoted(app, monkeypatch, caplog, make_user):
    make_user(email="root@example.com", role=Role.USER)
    with caplog.at_level(logging.WARNING):
        result = bootstrap(app, monkeypatch)
    assert result.exit_code == 0, result.output
    assert admins() == []
    assert any("not promoted" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("env", "message"), [
    ({"EMAIL": "not-an-email"}, "LOOKOUT_BOOTSTRAP_ADMIN_EMAIL: Not a valid email address."),
    ({"PASSWORD": "short"}, "LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD:"),
    ({"EMAIL": None}, "LOOKOUT_BOOTSTRAP_ADMIN_EMAIL (or LOOKOUT_BOOTSTRAP_ADMIN_EMAIL_FILE) is not set"),
    ({"PASSWORD": None}, "PASSWORD (or LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD_FILE) is not set"),
    ({"PASSWORD": None, "PASSWORD_FILE": "/nonexistent/password"},
     "LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD_FILE: cannot read /nonexistent/password"),
])
def test_bad_settings_fail_with_a_message_naming_them(app, monkeypatch, env, message):
    result = bootstrap(app, monkeypatch, **env)
    assert result.exit_code != 0
    assert message in result.output
    assert admins() == []
