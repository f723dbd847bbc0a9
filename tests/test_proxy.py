"""Which X-Forwarded-For / X-Forwarded-Proto the app believes (app.security.trust_proxy).

The edge proxy appends the address it saw to X-Forwarded-For and sets X-Forwarded-Proto; the
app trusts PROXY_TRUSTED_HOPS entries from the right and nothing a client wrote before them.
The same through a real TLS-terminating HAProxy: tests/test_edge_tls.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import jsonify, request

from app import create_app

PROXY = "10.1.2.3"


def whoami(settings: dict[str, str], database_url: str = "sqlite://") -> Any:
    app = create_app({"DATABASE_URL": database_url, **settings})

    @app.get("/whoami")
    def _whoami() -> Any:
        return jsonify(address=request.remote_addr, scheme=request.scheme, host=request.host)

    return app.test_client()


def ask(client: Any, peer: str, **headers: str) -> dict[str, str]:
    answer = client.get("/whoami", headers={k.replace("_", "-"): v for k, v in headers.items()},
                        environ_base={"REMOTE_ADDR": peer})
    assert answer.status_code == 200, answer.text
    return answer.get_json()


@pytest.mark.parametrize("settings, peer, forwarded_for, address, scheme", [
    # One hop: the entry the proxy appended, never what the client wrote before it.
    ({"PROXY_TRUSTED_HOPS": "1"}, PROXY, "6.6.6.6, 203.0.113.5", "203.0.113.5", "https"),
    ({"PROXY_TRUSTED_HOPS": "1"}, PROXY, "203.0.113.5", "203.0.113.5", "https"),
    # Two hops (a cloud L7 balancer, then the gateway): the balancer's entry.
    ({"PROXY_TRUSTED_HOPS": "2"}, PROXY, "6.6.6.6, 203.0.113.5, 10.9.9.9", "203.0.113.5", "https"),
    # The default trusts no proxy: the headers change nothing.
    ({}, PROXY, "6.6.6.6", PROXY, "http"),
    # A peer outside PROXY_TRUSTED_ADDRESSES went around the proxy: its headers are ignored.
    ({"PROXY_TRUSTED_HOPS": "1", "PROXY_TRUSTED_ADDRESSES": "10.1.0.0/16"}, "10.2.0.7", "6.6.6.6",
     "10.2.0.7", "http"),
    ({"PROXY_TRUSTED_HOPS": "1", "PROXY_TRUSTED_ADDRESSES": "192.0.2.0/24, 10.1.0.0/16"}, PROXY, "6.6.6.6",
     "6.6.6.6", "https"),
])
def test_client_address_and_scheme(settings, peer, forwarded_for, address, scheme):
    hops = int(settings.get("PROXY_TRUSTED_HOPS", "1"))  # each proxy appends its scheme too
    seen = ask(whoami(settings), peer, X_Forwarded_For=forwarded_for,
               X_Forwarded_Proto=", ".join(["https"] * hops))
    assert (seen["address"], seen["scheme"]) == (address, scheme)


def test_forwarded_host_is_never_trusted():
    seen = ask(whoami({"PROXY_TRUSTED_HOPS": "1"}), PROXY, X_Forwarded_For="203.0.113.5",
               X_Forwarded_Host="evil.example")
    assert seen["host"] == "localhost"


def test_rate_limit_counts_the_forwarded_client(sqlite_url):
    """Two clients behind one proxy get a login budget each; one client cannot reset its own by
    writing another address in front of the proxy's entry."""
    client = whoami({"PROXY_TRUSTED_HOPS": "1", "RATE_LIMIT_LOGIN": "2 per minute"}, sqlite_url)

    def token(forwarded_for: str) -> int:
        return client.post("/api/v1/auth/token", json={"email": "nobody@example.com", "password": "x" * 12},
                           headers={"X-Forwarded-For": forwarded_for},
                           environ_base={"REMOTE_ADDR": PROXY}).status_code

    assert [token(f"{n}.6.6.6, 203.0.113.5") for n in range(3)][-1] == 429
    assert token("198.51.100.7") != 429
