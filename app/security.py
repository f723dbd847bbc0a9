"""Security headers on every response, and CORS only for the origins configured.

Settings: CORS_ORIGINS (empty: no CORS headers, so browsers keep other sites out), HSTS_SECONDS.

The headers are a fixed set written here rather than by Flask-Talisman: Talisman's value is
HTTPS redirects, cookie flags and CSP nonces, and none applies (TLS ends at the load balancer,
the API sets no cookies, and APIFlask's docs template has no nonce hook). The docs page gets a
CSP of its own that allows its inline script and style by hash, computed from the page itself.
"""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, Response, request

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), geolocation=(), microphone=(), payment=(), usb=()",
}
DOCS_ENDPOINT = "openapi.docs"
INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)
EXPOSED = ["Location", "Retry-After", "X-Request-ID"]


def docs_csp(html: bytes) -> str:
    """Swagger UI's CSP: its files from here, its inline script and style by hash, the spec
    and "Try it out" calls to this origin, and the data: icons of its stylesheet."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for tag, body in INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        hashes[tag].append(f"'sha256-{digest}'")
    return "; ".join([
        "default-src 'none'",
        f"script-src 'self' {' '.join(hashes[b'script'])}".rstrip(),
        f"style-src 'self' {' '.join(hashes[b'style'])}".rstrip(),
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


def init_app(app: Flask) -> None:
    """Add the headers to every response (errors and docs included); open CORS if configured."""
    hsts = app.config["HSTS_SECONDS"]
    fixed = dict(HEADERS)
    if hsts:
        fixed["Strict-Transport-Security"] = f"max-age={hsts}"

    @app.after_request
    def _secure(response: Response) -> Response:
        headers = response.headers
        for name, value in fixed.items():
            headers.setdefault(name, value)
        if request.endpoint == DOCS_ENDPOINT and not response.direct_passthrough:
            headers["Content-Security-Policy"] = docs_csp(response.get_data())
        else:
            headers.setdefault("Content-Security-Policy", API_CSP)
        headers.setdefault("Cache-Control", "no-store")  # token responses above all (RFC 6749 5.1)
        return response

    origins = app.config["CORS_ORIGINS"]
    if origins:
        from flask_cors import CORS

        CORS(app, resources={r"/api/*": {"origins": list(origins)}}, expose_headers=EXPOSED,
             allow_headers=["Authorization", "Content-Type", "X-Request-ID"], max_age=600,
             supports_credentials=False)
