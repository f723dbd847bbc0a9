"""The service root: what this is and where to go next."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import Response, current_app, request, url_for

from ..schemas import ServiceInfo

bp = APIBlueprint("main", __name__, tag="Service")


@bp.get("/")
@bp.output(ServiceInfo)
@bp.doc(summary="Service name, version, commit and links")
def index() -> Response:
    return current_app.response_class(_document(request.script_root), mimetype="application/json")


def _document(script_root: str) -> bytes:
    """The document depends only on the app's settings and where it is mounted: serialise it
    through its schema once per mount point instead of on every request."""
    cache: dict[str, bytes] = current_app.extensions.setdefault("lookout.index", {})
    if script_root not in cache:
        config = current_app.config
        document = ServiceInfo().dump({
            "service": config["SERVICE_NAME"],
            "version": current_app.extensions["lookout.version"],
            "commit": config["GIT_COMMIT"],
            "environment": config["LOOKOUT_ENV"],
            "links": {
                "docs": url_for("openapi.docs"),
                "openapi": url_for("openapi.spec"),
                "users": url_for("api.list_users"),
                "health": url_for("health.readyz"),
            },
        })
        cache[script_root] = current_app.json.dumps(document).encode() + b"\n"
    return cache[script_root]
