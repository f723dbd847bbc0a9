"""The transactional outbox: every change that matters writes its event row in the change's
transaction; a rolled-back change leaves none, a committed one exactly its own."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from conftest import PASSWORD, assert_problem, bearer
from sqlalchemy import delete, select

from app.extensions import db
from app.models import OutboxEvent, Role, User
from app.outbox import record_event

pytestmark = pytest.mark.usefixtures("outbox")


def events() -> list[tuple[str, int, dict[str, Any]]]:
    db.session.expire_all()
    return [(e.type, e.user_id, e.payload)
            for e in db.session.scalars(select(OutboxEvent).order_by(OutboxEvent.seq))]


def no_secret_in(rows: list[tuple[str, int, dict[str, Any]]]) -> None:
    for row in rows:
        text = repr(row)
        assert PASSWORD not in text and "argon2" not in text and "hash" not in text


def test_create_writes_exactly_its_event(client, make_user):
    admin = make_user(Role.ADMIN, email="admin@example.com")
    db.session.execute(delete(OutboxEvent))
    db.session.commit()
    response = client.post("/api/v1/users", headers=bearer(admin),
                           json={"email": "Ada@Example.com", "name": "Ada", "password": PASSWORD})
    assert response.status_code == 201
    new_id = response.get_json()["id"]
    assert events() == [("user.created", new_id, {"email": "ada@example.com", "name": "Ada", "role": "user"})]
    row = db.session.scalar(select(OutboxEvent))
    assert isinstance(row.id, uuid.UUID) and row.published_at is None and row.attempts == 0
    assert row.occurred_at.utcoffset().total_seconds() == 0


def test_duplicate_email_writes_nothing(client, make_user):
    admin = make_user(Role.ADMIN, email="admin@example.com")
    make_user(email="taken@example.com")
    db.session.execute(delete(OutboxEvent))
    db.session.commit()
    response = client.post("/api/v1/users", headers=bearer(admin),
                           json={"email": "taken@example.com", "name": "X", "password": PASSWORD})
    assert_problem(response, 409)
    assert events() == []


def test_email_change_goes_to_the_old_address_and_a_duplicate_writes_nothing(client, make_user):
    admin = make_user(Role.ADMIN, email="admin@example.com")
    user = make_user(email="old@example.com", name="Old")
    make_user(email="taken@example.com")
    db.session.execute(delete(OutboxEvent))
    db.session.commit()
    refused = client.patch(f"/api/v1/users/{user.id}", headers=bearer(admin),
                           json={"email": "taken@example.com"})
    assert_problem(refused, 409)
    assert events() == []
    ok = client.patch(f"/api/v1/users/{user.id}", headers=bearer(admin), json={"email": "new@example.com"})
    assert ok.status_code == 200
    assert events() == [("user.email_changed", user.id,
                         {"old_email": "old@example.com", "new_email": "new@example.com", "name": "Old"})]


def test_password_and_role_changes_and_a_name_change_writes_none(client, make_user):
    admin = make_user(Role.ADMIN, email="admin@example.com")
    user = make_user(email="u@example.com", name="U")
    db.session.execute(delete(OutboxEvent))
    db.session.commit()
    renamed = client.patch(f"/api/v1/users/{user.id}", headers=bearer(admin), json={"name": "V"})
    assert renamed.status_code == 200
    assert events() == []
    changed = client.patch(f"/api/v1/users/{user.id}", headers=bearer(admin),
                           json={"password": "a-new-long-password", "role": "admin"})
    assert changed.status_code == 200
    rows = events()
    assert rows == [("user.password_changed", user.id, {"email": "u@example.com", "name": "V"}),
                    ("user.role_changed", user.id,
                     {"email": "u@example.com", "name": "V", "old_role": "user", "new_role": "admin"})]
    no_secret_in(rows)


def test_last_admin_refusals_write_nothing(client, make_user):
    """The event row is added before the refusal; the rollback takes it away."""
    admin = make_user(Role.ADMIN, email="admin@example.com")
    db.session.execute(delete(OutboxEvent))
    db.session.commit()
    demote = client.patch(f"/api/v1/users/{admin.id}", headers=bearer(admin), json={"role": "user"})
    assert_problem(demote, 409)
    assert_problem(client.delete(f"/api/v1/users/{admin.id}", headers=bearer(admin)), 409)
    assert events() == []


def test_delete_writes_its_event_with_the_address(client, make_user):
    admin = make_user(Role.ADMIN, email="admin@example.com")
    user = make_user(email="gone@example.com", name="Gone")
    user_id = user.id
    db.session.execute(delete(OutboxEvent))
    db.session.commit()
    assert client.delete(f"/api/v1/users/{user_id}", headers=bearer(admin)).status_code == 204
    assert events() == [("user.deleted", user_id, {"email": "gone@example.com", "name": "Gone"})]


def test_a_rolled_back_transaction_keeps_no_event(app):
    user = User(email="r@example.com", name="R", role=Role.USER, password_hash="x")
    db.session.add(user)
    record_event(user, "user.created", {"email": "r@example.com", "name": "R", "role": "user"})
    db.session.flush()
    assert len(events()) == 1  # written, in the open transaction
    db.session.rollback()
    assert events() == []


def test_event_data_is_checked(app):
    user = User(email="r@example.com", name="R", role=Role.USER, password_hash="x")
    with pytest.raises(ValueError, match="password_changed"):
        record_event(user, "user.password_changed",
                     {"email": "r@example.com", "name": "R", "password_hash": "x"})


def test_the_request_trace_context_is_stored(traced_app, span_exporter):
    from opentelemetry import trace

    admin = User(email="admin@example.com", name="A", role=Role.ADMIN, password_hash="x")
    db.session.add(admin)
    db.session.commit()
    db.session.execute(delete(OutboxEvent))
    db.session.commit()
    tracer = span_exporter.provider.get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        user = User(email="t@example.com", name="T", role=Role.USER, password_hash="x")
        db.session.add(user)
        record_event(user, "user.created", {"email": "t@example.com", "name": "T", "role": "user"})
        db.session.commit()
        trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
    row = db.session.scalar(select(OutboxEvent))
    assert row.traceparent is not None and row.traceparent.split("-")[1] == trace_id
    assert span.get_span_context().is_valid
    db.session.execute(delete(OutboxEvent))
    db.session.commit()


def test_cli_create_and_bootstrap_admin_write_their_events(app, monkeypatch):
    runner = app.test_cli_runner()
    created = runner.invoke(args=["users", "create", "--email", "Cli@Example.com", "--name", "Cli",
                                  "--password", PASSWORD])
    assert created.exit_code == 0, created.output
    for name in ("PASSWORD_FILE", "NAME"):
        monkeypatch.delenv(f"LOOKOUT_BOOTSTRAP_ADMIN_{name}", raising=False)
    monkeypatch.setenv("LOOKOUT_BOOTSTRAP_ADMIN_EMAIL", "root@example.com")
    monkeypatch.setenv("LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)
    boot = runner.invoke(args=["users", "bootstrap-admin"])
    assert boot.exit_code == 0, boot.output
    again = runner.invoke(args=["users", "bootstrap-admin"])  # unchanged: no event
    assert again.exit_code == 0, again.output
    duplicate = runner.invoke(args=["users", "create", "--email", "cli@example.com", "--name", "Cli",
                                    "--password", PASSWORD])
    assert duplicate.exit_code != 0
    rows = events()
    assert [(t, p["email"], p["role"]) for t, _, p in rows] == [
        ("user.created", "cli@example.com", "user"), ("user.created", "root@example.com", "admin")]
    no_secret_in(rows)
