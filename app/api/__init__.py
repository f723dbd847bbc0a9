"""Version 1 of the public API."""

from __future__ import annotations

from apiflask import APIBlueprint

from ..guards import require_json_body

bp = APIBlueprint("api", __name__, url_prefix="/api/v1", tag="Users")


bp.before_request(require_json_body)

from . import users  # noqa: E402,F401  (routes register on bp)
