"""The anchor: the users API as the best-known Flask tutorial's API chapter writes it.

A Flask-SQLAlchemy model, ``db.paginate(select(User))``, a ``to_dict()`` per row and
``jsonify``; no telemetry, validation, authentication or security headers. It reads Lookout's
own ``users`` table (the same PostgreSQL, the same rows) and answers with the same fields as
Lookout's full record, so the two count the same work:

    GET /api/v1/users?page=1&per_page=20    a page of users and its links
    GET /api/v1/users/<id>                  one user

    DATABASE_URL=postgresql://... gunicorn loadtests.bench.anchor:create_app()
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from flask import Flask, jsonify, request, url_for
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, ForeignKey, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(db.Model):  # type: ignore[name-defined]
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    token_version: Mapped[int] = mapped_column(default=0)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "email": self.email, "role": self.role,
                "created_by": self.created_by_id, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


def create_app(database_url: str | None = None) -> Flask:
    app = Flask(__name__)
    url = database_url or os.environ["DATABASE_URL"]
    app.config["SQLALCHEMY_DATABASE_URI"] = url.replace("postgresql://", "postgresql+psycopg://", 1)
    db.init_app(app)

    @app.get("/api/v1/users")
    def get_users():  # type: ignore[no-untyped-def]
        page = request.args.get("page", 1, type=int)
        per_page = min(request.args.get("per_page", 10, type=int), 100)
        users = db.paginate(select(User).order_by(User.id), page=page, per_page=per_page, error_out=False)
        return jsonify({
            "items": [user.to_dict() for user in users.items],
            "_meta": {"page": page, "per_page": per_page, "total_pages": users.pages,
                      "total_items": users.total},
            "_links": {
                "self": url_for("get_users", page=page, per_page=per_page),
                "next": url_for("get_users", page=page + 1, per_page=per_page) if users.has_next else None,
                "prev": url_for("get_users", page=page - 1, per_page=per_page) if users.has_prev else None,
            },
        })

    @app.get("/api/v1/users/<int:user_id>")
    def get_user(user_id: int):  # type: ignore[no-untyped-def]
        return jsonify(db.get_or_404(User, user_id).to_dict())

    return app
