"""``flask users ...`` commands (``flask db ...`` comes from Flask-Migrate).

Usage (``make admin`` and ``make seed`` run these with LOOKOUT_ENV=development):
    flask --app app users create --email E --name N [--admin]   # password prompted for
    flask --app app users seed 20

Environment variables read: LOOKOUT_USER_PASSWORD (the new user's password, instead of the
prompt), and the app's settings (LOOKOUT_ENV, DATABASE_URL, ...), as for every flask command.
"""

from __future__ import annotations

import secrets

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .auth.passwords import hash_password
from .extensions import db
from .models import Role, User
from .schemas import UserIn

users_cli = AppGroup("users", help="Manage users.")


@users_cli.command("create")
@click.option("--email", prompt=True, help="Prompted for when not given.")
@click.option("--name", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              envvar="LOOKOUT_USER_PASSWORD", help="Prompted for when not given.")
@click.option("--admin", is_flag=True, help="Give the user the admin role.")
def create_user(email: str, name: str, password: str, admin: bool) -> None:
    """Create a user, validated like the API does."""
    role = Role.ADMIN.value if admin else Role.USER.value
    errors = UserIn().validate({"email": email, "name": name, "password": password, "role": role})
    if errors:
        raise click.UsageError("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
    data = UserIn().load({"email": email, "name": name, "password": password, "role": role})
    user = User(email=data["email"], name=data["name"], role=data["role"],
                password_hash=hash_password(data["password"]))
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        raise click.ClickException(f"a user with email {data['email']} already exists") from None
    click.echo(f"created {user.role.value} {user.email} (id {user.id})")


@users_cli.command("seed")
@click.argument("count", type=click.IntRange(1, 100_000))
def seed(count: int) -> None:
    """Add COUNT demo users (demo-N@example.com) that are not there yet, with random passwords."""
    existing = set(db.session.scalars(select(User.email).where(User.email.like("demo-%@example.com"))))
    password_hash = hash_password(secrets.token_urlsafe(16))  # one hash: seeding stays fast
    new = [User(email=f"demo-{n}@example.com", name=f"Demo User {n}", role=Role.USER,
                password_hash=password_hash)
           for n in range(1, count + 1) if f"demo-{n}@example.com" not in existing]
    db.session.add_all(new)
    db.session.commit()
    click.echo(f"seeded {len(new)} users ({count - len(new)} already there)")


def init_app(app: Flask) -> None:
    app.cli.add_command(users_cli)
