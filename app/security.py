"""Security headers on every response, and CORS only for the origins configured.

Settings: CORS_ORIGINS (empty: no CORS headers, so browsers keep other sites out), HSTS_SECONDS,
PROXY_TRUSTED_HOPS and PROXY_TRUSTED_ADDRESSES (whose X-Forwarded-For/-Proto to believe).

The headers themselves, the docs page's CSP and the absence of sessions are the platform's
(app/platform/security.py), shared with the notifier.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .platform.security import API_CSP, HEADERS, secure_responses  # noqa: F401  # re-exported

EXPOSED = ["Location", "Retry-After", "X-Request-ID"]


def init_app(app: Flask) -> None:
    """Add the headers to every response (errors and docs included); open CORS if configured."""
    secure_responses(app, app.config["HSTS_SECONDS"])
    trust_proxy(app, app.config["PROXY_TRUSTED_HOPS"], app.config["PROXY_TRUSTED_ADDRESSES"])

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
