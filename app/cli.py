"""``flask users ...`` commands (``flask db ...`` comes from Flask-Migrate).

Usage (``make admin`` and ``make seed`` run these with LOOKOUT_ENV=development):
    flask --app app users create --email E --name N [--admin]   # password prompted for
    flask --app app users seed 20
    flask --app app users bootstrap-admin [--reset-password]    # the deployment's migration Job

Environment variables read: LOOKOUT_USER_PASSWORD (the new user's password, instead of the
prompt); LOOKOUT_BOOTSTRAP_ADMIN_EMAIL, LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD (or
LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD_FILE, a file holding it) and LOOKOUT_BOOTSTRAP_ADMIN_NAME
(default "Admin") for bootstrap-admin; and the app's settings (LOOKOUT_ENV, DATABASE_URL, ...),
as for every flask command.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .auth.passwords import hash_password, verify_password
from .extensions import db
from .models import Role, User
from .outbox import record_event
from .records import forget_users
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
    record_event(user, "user.created", {"email": user.email, "name": user.name,
                                        "role": Role(user.role).value})
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
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


BOOTSTRAP_EMAIL = "LOOKOUT_BOOTSTRAP_ADMIN_EMAIL"
BOOTSTRAP_PASSWORD = "LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD"  # noqa: S105  # nosec B105 # a variable name
BOOTSTRAP_NAME = "LOOKOUT_BOOTSTRAP_ADMIN_NAME"


def _from_environment(name: str) -> str:
    """Return ``name``'s value, or the content of the file ``<name>_FILE`` names (a mounted secret)."""
    if path := os.environ.get(f"{name}_FILE"):
        try:
            return Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise click.ClickException(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    if not (value := os.environ.get(name, "")):
        raise click.ClickException(f"{name} (or {name}_FILE) is not set")
    return value


@users_cli.command("bootstrap-admin")
@click.option("--reset-password", is_flag=True,
              help="Set the existing account's password to the configured one (never done otherwise).")
def bootstrap_admin(reset_password: bool) -> None:
    """Create the first admin from LOOKOUT_BOOTSTRAP_ADMIN_*; an existing account is left as it is.

    Safe to run on every deploy: a rerun changes nothing. When the account exists with another
    password (changed through the API since) the password is not overwritten: a warning says
    so, and ``--reset-password`` sets it on purpose.
    """
    email, password = _from_environment(BOOTSTRAP_EMAIL), _from_environment(BOOTSTRAP_PASSWORD)
    given = {"email": email, "name": os.environ.get(BOOTSTRAP_NAME) or "Admin", "password": password,
             "role": Role.ADMIN.value}
    if errors := UserIn().validate(given):
        names = {"email": BOOTSTRAP_EMAIL, "password": BOOTSTRAP_PASSWORD, "name": BOOTSTRAP_NAME}
        raise click.UsageError("; ".join(f"{names.get(k, k)}: {' '.join(v)}" for k, v in errors.items()))
    data = UserIn().load(given)
    user = db.session.scalar(select(User).where(User.email == data["email"]))
    if user is None:
        user = User(email=data["email"], name=data["name"], role=Role.ADMIN,
                    password_hash=hash_password(data["password"]))
        db.session.add(user)
        record_event(user, "user.created", {"email": user.email, "name": user.name, "role": Role.ADMIN.value})
        try:
            db.session.commit()
        except IntegrityError:  # another run created it in between: that one's account stands
            db.session.rollback()
            click.echo(f"bootstrap admin {data['email']} was created by another run; unchanged")
            return
        click.echo(f"created bootstrap admin {user.email} (id {user.id})")
        return
    if not user.is_admin:
        current_app.logger.warning(
            "bootstrap admin %s exists with the role %s; it is not promoted (an admin may do it "
            "with PATCH /api/v1/users/%d)", user.email, user.role.value, user.id)
    if verify_password(user.password_hash, data["password"])[0]:
        click.echo(f"bootstrap admin {user.email} exists (id {user.id}); unchanged")
    elif reset_password:
        user.password_hash = hash_password(data["password"])
        user.token_version = User.token_version + 1  # as a password change through the API does
        record_event(user, "user.password_changed", {"email": user.email, "name": user.name})
        db.session.commit()
        forget_users(user.id)
        click.echo(f"bootstrap admin {user.email}: password reset to {BOOTSTRAP_PASSWORD}")
    else:
        current_app.logger.warning(
            "bootstrap admin %s exists with a password other than %s; it is NOT overwritten. To "
            "reset it, change it through the API (PATCH /api/v1/users/%d, with current_password "
            "when you change your own) or run `flask --app app users bootstrap-admin "
            "--reset-password` with the same settings", user.email, BOOTSTRAP_PASSWORD, user.id)
        click.echo(f"bootstrap admin {user.email} exists (id {user.id}) with another password; unchanged")


def init_app(app: Flask) -> None:
    app.cli.add_command(users_cli)
