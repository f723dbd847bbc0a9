"""Security headers on every response of a service, and no sessions: what the users service
(app/security.py, which adds CORS, HSTS and the proxy's headers) and the notifier share.

The headers are a fixed set written here rather than by Flask-Talisman: Talisman's value is
HTTPS redirects, cookie flags and CSP nonces, and none applies (TLS ends at the load balancer,
the APIs set no cookies, and APIFlask's docs template has no nonce hook). The docs page gets a
CSP of its own that allows its inline script and style by hash, computed from the page itself.
"""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, Response, request
from flask.sessions import SessionInterface

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


def secure_responses(app: Flask, hsts_seconds: int = 0) -> None:
    """Add the headers to every response of ``app`` (errors and docs included), and open no
    session: the APIs are stateless (bearer tokens, no cookies), so the signed-cookie session
    Flask would otherwise open and save on every request is skipped."""
    fixed = dict(HEADERS)
    if hsts_seconds:
        fixed["Strict-Transport-Security"] = f"max-age={hsts_seconds}"
    fixed["Content-Security-Policy"] = API_CSP
    fixed["Cache-Control"] = "no-store"  # token responses above all (RFC 6749 5.1)
    defaults = [(name.lower(), name, value) for name, value in fixed.items()]

    @app.after_request
    def _secure(response: Response) -> Response:
        headers = response.headers
        if request.endpoint == DOCS_ENDPOINT and not response.direct_passthrough:
            headers["Content-Security-Policy"] = docs_csp(response.get_data())
        # One pass over the response's headers, then one extend: per-header setdefault() scans
        # them every time, and this runs on every response.
        present = {name.lower() for name in headers.keys()}
        headers.extend([(name, value) for key, name, value in defaults if key not in present])
        return response

    app.session_interface = NoSessions()


class NoSessions(SessionInterface):
    """Every request gets Flask's null session: reading it works, writing to it raises."""

    def open_session(self, app, request):  # type: ignore[no-untyped-def]
        return None  # Flask then uses make_null_session()

    def save_session(self, app, session, response):  # type: ignore[no-untyped-def]
        return None
