"""``flask users create`` and ``flask users seed``."""

from __future__ import annotations

from sqlalchemy import func, select

from app.extensions import db
from app.models import Role, User


def test_create_admin(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "--email", "Root@Example.com", "--name", "Root",
                                 "--password", "long-enough-pw", "--admin"])
    assert result.exit_code == 0, result.output
    user = db.session.scalar(select(User).where(User.email == "root@example.com"))
    assert user.role == Role.ADMIN
    response = app.test_client().post("/api/v1/auth/token",
                                      json={"email": "root@example.com", "password": "long-enough-pw"})
    assert response.status_code == 200


def test_create_rejects_bad_input_and_duplicates(app):
    runner = app.test_cli_runner()
    bad = runner.invoke(args=["users", "create", "--email", "nope", "--name", "X",
                              "--password", "long-enough"])
    assert bad.exit_code != 0 and "email" in bad.output
    args = ["users", "create", "--email", "a@example.com", "--name", "A", "--password", "long-enough"]
    assert runner.invoke(args=args).exit_code == 0
    again = runner.invoke(args=args)
    assert again.exit_code != 0 and "already exists" in again.output


def test_seed_is_idempotent(app):
    runner = app.test_cli_runner()
    assert "seeded 25" in runner.invoke(args=["users", "seed", "25"]).output
    assert "seeded 5 users (25 already there)" in runner.invoke(args=["users", "seed", "30"]).output
    assert db.session.scalar(select(func.count()).select_from(User)) == 30
