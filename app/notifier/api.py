"""The notifier's HTTP API: its probes and ``GET /api/v1/notifications``."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
from apiflask import APIBlueprint, Schema, abort
from apiflask.fields import DateTime, Integer, List, Nested, String
from apiflask.validators import Range
from flask import Flask, Response, current_app, request
from sqlalchemy import func, select

from ..platform.errors import problem
from ..platform.health import check_of, schema_problem, shutdown_event
from .extensions import MIGRATIONS, db
from .models import Notification

bp = APIBlueprint("health", __name__, tag="Health")
api = APIBlueprint("notifications", __name__, url_prefix="/api/v1", tag="Notifications")
UPGRADE = "flask --app app.notifier:create_app db upgrade"


class NotificationsQuery(Schema):
    user_id = Integer(validate=Range(min=1))
    page = Integer(load_default=1, validate=Range(min=1, max=100_000))


class NotificationOut(Schema):
    id = Integer()
    event_id = String()
    event_type = String()
    template = String(allow_none=True)
    user_id = Integer(allow_none=True)
    recipient = String(allow_none=True)
    state = String()
    attempts = Integer()
    occurred_at = DateTime(allow_none=True)
    sent_at = DateTime(allow_none=True)
    last_error = String(allow_none=True)


class NotificationsOut(Schema):
    items = List(Nested(NotificationOut))
    page = Integer()
    per_page = Integer()
    total = Integer()


@bp.get("/livez")
def livez() -> dict[str, str]:
    return {"status": "ok"}


def broker_problem(url: str, timeout: float) -> str | None:
    params = pika.URLParameters(url)
    params.socket_timeout = params.blocked_connection_timeout = params.stack_timeout = timeout
    params.connection_attempts = 1
    try:
        connection = pika.BlockingConnection(params)
        try:
            connection.channel()
        finally:
            if connection.is_open:
                connection.close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        return f"The broker is not reachable ({exc.__class__.__name__})."
    return None


@bp.get("/readyz")
def readyz() -> dict[str, Any] | Response:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if shutdown_event(app).is_set():
        return problem(503, "The server is shutting down.", {"Retry-After": "5"},
                       checks={"server": "shutting down"})
    timeout = app.config["READINESS_TIMEOUT_SECONDS"]

    def database() -> str | None:
        with app.app_context():
            return schema_problem(app, db.engine, MIGRATIONS, timeout, UPGRADE)

    checks = {"database": check_of(app)(database, timeout),
              "broker": check_of(app, "notifier.broker_check", "the broker")(
                  lambda: broker_problem(app.config["BROKER_URL"], timeout), timeout)}
    failing = {name: why for name, why in checks.items() if why is not None}
    if failing:
        return problem(503, " ".join(failing.values()), {"Retry-After": "5"},
                       checks={name: ("failing" if name in failing else "ok") for name in checks})
    return {"status": "ok", "checks": {name: "ok" for name in checks}}


def caller() -> dict[str, Any]:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    claims = current_app.extensions["notifier.verifier"].claims(token.strip()) \
        if scheme.lower() == "bearer" and token.strip() else None
    if claims is None:
        abort(401, "A valid bearer token is required.", headers={"WWW-Authenticate": "Bearer"})
    return claims  # type: ignore[no-any-return]  # abort raised otherwise


@api.get("/notifications")
@api.input(NotificationsQuery, location="query", arg_name="query")
@api.output(NotificationsOut)
@api.doc(summary="Emails sent (or not) for a user's events: admins any user's, a user their own",
         security="BearerAuth", responses=[401, 403])
def list_notifications(query: dict[str, Any]) -> dict[str, Any]:
    claims = caller()
    own = int(claims["sub"])
    user_id = query.get("user_id")
    if claims["role"] != "admin":
        if user_id is not None and user_id != own:
            abort(403, "You may read your own notifications only.")
        user_id = own
    per_page = current_app.config["PAGE_SIZE"]
    page = query["page"]
    where = [] if user_id is None else [Notification.user_id == user_id]
    total = db.session.scalar(select(func.count()).select_from(Notification).where(*where)) or 0
    rows = db.session.scalars(select(Notification).where(*where).order_by(Notification.id.desc())
                              .limit(per_page).offset((page - 1) * per_page)).all()
    return {"items": rows, "page": page, "per_page": per_page, "total": total}
