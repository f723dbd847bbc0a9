"""What the users API answers with: links that never trust the request's Host, the pagination
block of a list page, and a user in the view its reader may see (policy.py)."""

from __future__ import annotations

from math import ceil
from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Response, current_app, url_for

from ..records import UserLike, full_view, public_view
from .policy import View, view_for

# What werkzeug's URL builder leaves unquoted in a query (werkzeug.urls._urlencode, private):
# the page links are built from one url_for per page, with the same quoting.
QUERY_SAFE = "!$'()*,/:;?@"


def link(endpoint: str, **values: Any) -> str:
    """A link to ``endpoint``: a path, under PUBLIC_URL when that is set; never built from the
    request's Host or X-Forwarded-* headers, which any client can set."""
    return f"{current_app.config['PUBLIC_URL'] or ''}{url_for(endpoint, **values)}"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` as JSON. orjson, and no schema dump: the views build exactly the schema's fields
    (tests/test_openapi.py checks every answer against the spec)."""
    return current_app.response_class(orjson.dumps(body), status, headers, mimetype="application/json")


def page_links(page: int, per_page: int, total: int, filters: dict[str, Any]) -> dict[str, Any]:
    """The pagination block of a list page; its links keep the request's filters."""
    pages = ceil(total / per_page)
    last_num = max(pages, 1)  # no users: "last" is page 1
    base = link("api.list_users")

    def to(number: int) -> str:
        return f"{base}?{urlencode({'page': number, 'per_page': per_page, **filters}, safe=QUERY_SAFE)}"

    return {"total": total, "pages": pages, "per_page": per_page, "page": page,
            "current": to(page), "first": to(1), "last": to(last_num),
            "next": to(page + 1) if page < pages else "",
            # past the end: back to the last page, not to page - 1
            "prev": to(min(page - 1, last_num)) if page > 1 else ""}


def user_response(actor: UserLike, user: UserLike, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    """``user`` in the view ``actor`` may read: the public profile, or the full record."""
    view = full_view(user) if view_for(actor, user) is View.FULL else public_view(user)
    return json_response(view, status, headers)
