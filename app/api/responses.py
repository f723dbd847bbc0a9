"""What the users API answers with: links that never trust the request's Host, the pagination
block of a list page, and a user in the view its reader may see (policy.py)."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, url_for

from ..models import User
from ..schemas import UserFull, UserPublic
from .policy import View, view_for

FULL, PUBLIC = UserFull(), UserPublic()


def link(endpoint: str, **values: Any) -> str:
    """A link to ``endpoint``: a path, under PUBLIC_URL when that is set; never built from the
    request's Host or X-Forwarded-* headers, which any client can set."""
    return f"{current_app.config['PUBLIC_URL'] or ''}{url_for(endpoint, **values)}"


def page_links(page: Any, filters: dict[str, Any]) -> dict[str, Any]:
    """The pagination block of a list page; its links keep the request's filters."""
    per_page, last_num = page.per_page, max(page.pages, 1)  # no users: "last" is page 1

    def to(number: int) -> str:
        return link("api.list_users", page=number, per_page=per_page, **filters)

    return {"total": page.total, "pages": page.pages, "per_page": per_page, "page": page.page,
            "current": to(page.page), "first": to(1), "last": to(last_num),
            "next": to(page.page + 1) if page.page < page.pages else "",
            # past the end: back to the last page, not to page - 1
            "prev": to(min(page.page - 1, last_num)) if page.page > 1 else ""}


def user_response(actor: User, user: User, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    """``user`` in the view ``actor`` may read: the public profile, or the full record."""
    schema = FULL if view_for(actor, user) is View.FULL else PUBLIC
    response = jsonify(schema.dump(user))
    response.status_code = status
    response.headers.update(headers or {})
    return response
