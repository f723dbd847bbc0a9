"""The service root: what this is and where to go next."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import current_app, request, url_for

from ..schemas import ServiceInfo

bp = APIBlueprint("main", __name__, tag="Service")


@bp.get("/")
@bp.output(ServiceInfo)
@bp.doc(summary="Service name, version, commit and links")
def index() -> dict[str, object]:
    config = current_app.config
    return {
        "service": config["SERVICE_NAME"],
        "version": current_app.extensions["lookout.version"],
        "commit": config["GIT_COMMIT"],
        "environment": config["LOOKOUT_ENV"],
        "links": _links(request.script_root),
    }


def _links(script_root: str) -> dict[str, str]:
    """The links depend only on where the app is mounted: build them once per mount point."""
    cache: dict[str, dict[str, str]] = current_app.extensions.setdefault("lookout.links", {})
    if script_root not in cache:
        cache[script_root] = {
            "docs": url_for("openapi.docs"),
            "openapi": url_for("openapi.spec"),
            "users": url_for("api.list_users"),
            "health": url_for("health.readyz"),
        }
    return cache[script_root]
