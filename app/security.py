"""Security headers on every response, and CORS only for the origins configured.

Settings: CORS_ORIGINS (empty: no CORS headers, so browsers keep other sites out), HSTS_SECONDS,
PROXY_TRUSTED_HOPS and PROXY_TRUSTED_ADDRESSES (whose X-Forwarded-For/-Proto to believe).

The headers are a fixed set written here rather than by Flask-Talisman: Talisman's value is
HTTPS redirects, cookie flags and CSP nonces, and none applies (TLS ends at the load balancer,
the API sets no cookies, and APIFlask's docs template has no nonce hook). The docs page gets a
CSP of its own that allows its inline script and style by hash, computed from the page itself.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, request
from flask.sessions import SessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

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

    trust_proxy(app, app.config["PROXY_TRUSTED_HOPS"], app.config["PROXY_TRUSTED_ADDRESSES"])

    # The API is stateless (bearer tokens, no cookies): skip the signed-cookie session Flask
    # would otherwise open and save on every request.
    app.session_interface = NoSessions()

    origins = app.config["CORS_ORIGINS"]
    if origins:
        from flask_cors import CORS

        CORS(app, resources={r"/api/*": {"origins": list(origins)}}, expose_headers=EXPOSED,
             allow_headers=["Authorization", "Content-Type", "X-Request-ID"], max_age=600,
             supports_credentials=False)


def trust_proxy(app: Flask, hops: int, addresses: Iterable[str] = ()) -> None:
    """Take the client's address and scheme from the last ``hops`` proxies' X-Forwarded-For and
    X-Forwarded-Proto (Werkzeug's ProxyFix), for requests from ``addresses`` (any peer if empty).

    Only these two headers: the gateway sets nothing else, and a trusted X-Forwarded-Host would
    let a client choose the host of the links (PUBLIC_URL builds them). gunicorn's
    ``forwarded_allow_ips`` never sets REMOTE_ADDR, which the rate limits count by.
    """
    if hops:
        app.wsgi_app = FromTrustedPeers(app.wsgi_app, hops, addresses)  # type: ignore[method-assign]


class FromTrustedPeers:
    """ProxyFix for requests whose peer is in ``addresses``; others pass untouched, so a forged
    header sent around the proxy changes nothing. ProxyFix itself trusts every peer."""

    def __init__(self, wsgi_app: Any, hops: int, addresses: Iterable[str] = ()) -> None:
        self.direct = wsgi_app
        self.proxied = ProxyFix(wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_port=0, x_prefix=0)
        self.networks = [ipaddress.ip_network(cidr) for cidr in addresses]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.networks and not self._trusted(environ.get("REMOTE_ADDR", "")):
            return self.direct(environ, start_response)
        return self.proxied(environ, start_response)

    def _trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:  # a Unix socket or no peer at all
            return False
        return any(address in network for network in self.networks)


class NoSessions(SessionInterface):
    """Every request gets Flask's null session: reading it works, writing to it raises."""

    def open_session(self, app, request):  # type: ignore[no-untyped-def]
        return None  # Flask then uses make_null_session()

    def save_session(self, app, session, response):  # type: ignore[no-untyped-def]
        return None
