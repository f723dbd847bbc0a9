"""The service root: what this is and where to go next."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import Response, current_app, request, url_for

from ..schemas import ServiceInfo

bp = APIBlueprint("main", __name__, tag="Service")


@bp.get("/.well-known/jwks.json")
@bp.doc(summary="The public keys that verify this service's tokens (JWKS, RFC 7517)",
        description="EdDSA (Ed25519) keys by `kid`: the one that signs and any still published for a "
                    "rotation. Verifiers may cache it for `Cache-Control`'s max-age.")
def jwks() -> Response:
    from ..auth.tokens import signing_keys

    response = current_app.response_class(current_app.json.dumps(signing_keys().jwks),
                                          mimetype="application/json")
    response.headers["Cache-Control"] = f"public, max-age={current_app.config['JWKS_MAX_AGE_SECONDS']}"
    return response


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
