"""GET /api/v1/notifications: tokens verified against the users service's JWKS (served here over
real HTTP), admins read anyone's notifications, a user only their own, bad tokens get 401."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask_migrate import upgrade

from app.notifier import create_app
from app.notifier.extensions import MIGRATIONS, db
from app.notifier.models import Notification


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keys:
    def __init__(self) -> None:
        self.private = {"k1": Ed25519PrivateKey.generate()}
        self.fetches = 0

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
                          "x": b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))}
                         for kid, key in self.private.items()]}

    def token(self, sub: int = 1, role: str = "user", kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body = {"sub": str(sub), "role": role, "iat": now, "nbf": now, "exp": now + 300, "iss": "lookout",
                "aud": "lookout-api", "jti": "x", "ver": 0, **claims}
        return jwt.encode(body, self.private[kid], algorithm="EdDSA", headers={"kid": kid})


@pytest.fixture(scope="module")
def keys() -> Iterator[tuple[Keys, str]]:
    keys = Keys()

    class JWKS(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            keys.fetches += 1
            body = json.dumps(keys.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), JWKS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield keys, f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    server.shutdown()
    thread.join(10)


@pytest.fixture
def client(keys: tuple[Keys, str], tmp_path: Any) -> Any:
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}", "JWKS_URL": keys[1],
                      "PAGE_SIZE": "2"})
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        for i, user_id in enumerate((1, 1, 1, 2)):
            db.session.add(Notification(event_id=f"e{i}", event_type="user.created", template="welcome",
                                        user_id=user_id, recipient=f"u{user_id}@example.com", state="sent",
                                        attempts=1))
        db.session.commit()
    return app.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_user_reads_their_own_notifications_page_by_page(client, keys):
    first = client.get("/api/v1/notifications", headers=bearer(keys[0].token(sub=1)))
    assert first.status_code == 200
    body = first.get_json()
    assert body["total"] == 3 and len(body["items"]) == 2 and body["per_page"] == 2
    assert {item["user_id"] for item in body["items"]} == {1}
    assert body["items"][0]["state"] == "sent" and body["items"][0]["recipient"] == "u1@example.com"
    second = client.get("/api/v1/notifications?page=2", headers=bearer(keys[0].token(sub=1))).get_json()
    assert len(second["items"]) == 1


def test_an_admin_reads_anyone_and_everyone(client, keys):
    token = keys[0].token(sub=9, role="admin")
    assert client.get("/api/v1/notifications?user_id=2", headers=bearer(token)).get_json()["total"] == 1
    assert client.get("/api/v1/notifications", headers=bearer(token)).get_json()["total"] == 4


def test_a_user_may_not_read_another_users(client, keys):
    response = client.get("/api/v1/notifications?user_id=2", headers=bearer(keys[0].token(sub=1)))
    assert response.status_code == 403 and response.mimetype == "application/problem+json"


def test_bad_query_is_a_problem(client, keys):
    response = client.get("/api/v1/notifications?page=0", headers=bearer(keys[0].token(sub=1)))
    assert response.status_code == 422 and response.mimetype == "application/problem+json"


def forged_tokens(keys: Keys) -> dict[str, str]:
    now = int(time.time())
    good = {"sub": "1", "role": "admin", "iat": now, "exp": now + 300, "iss": "lookout", "aud": "lookout-api"}
    public_jwk = json.dumps(keys.jwks()["keys"][0])
    none_token = (b64(json.dumps({"alg": "none", "kid": "k1"}).encode()) + "."
                  + b64(json.dumps(good).encode()) + ".")
    hs_header = b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
    hs_payload = b64(json.dumps(good).encode())
    import hashlib
    import hmac

    def hs256(secret: bytes) -> str:
        signature = hmac.new(secret, f"{hs_header}.{hs_payload}".encode(), hashlib.sha256).digest()
        return f"{hs_header}.{hs_payload}.{b64(signature)}"

    pem = keys.private["k1"].public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    other = Ed25519PrivateKey.generate()
    return {
        "none": none_token,
        "hs256-with-public-pem": hs256(pem),
        "hs256-with-public-jwk": hs256(public_jwk.encode()),
        "expired": keys.token(role="admin", exp=now - 60, iat=now - 400, nbf=now - 400),
        "wrong-issuer": keys.token(role="admin", iss="someone-else"),
        "wrong-audience": keys.token(role="admin", aud="another-api"),
        "no-exp": jwt.encode({k: v for k, v in good.items() if k != "exp"}, keys.private["k1"],
                             algorithm="EdDSA", headers={"kid": "k1"}),
        "other-key-same-kid": jwt.encode(good, other, algorithm="EdDSA", headers={"kid": "k1"}),
        "no-kid": jwt.encode(good, keys.private["k1"], algorithm="EdDSA"),
        "garbage": "not.a.token",
    }


@pytest.mark.parametrize("case", ["none", "hs256-with-public-pem", "hs256-with-public-jwk", "expired",
                                  "wrong-issuer", "wrong-audience", "no-exp", "other-key-same-kid", "no-kid",
                                  "garbage"])
def test_a_bad_token_is_refused(client, keys, case):
    response = client.get("/api/v1/notifications", headers=bearer(forged_tokens(keys[0])[case]))
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_no_token_is_refused(client):
    assert client.get("/api/v1/notifications").status_code == 401


def test_unknown_kids_cost_no_fetch_within_the_cooldown(client, keys):
    key_set, _ = keys
    assert client.get("/api/v1/notifications", headers=bearer(key_set.token(sub=1))).status_code == 200
    before = key_set.fetches
    signing = key_set.private["k1"]
    random_kids = [jwt.encode({"sub": "1"}, signing, algorithm="EdDSA", headers={"kid": f"r{i}"})
                   for i in range(50)]
    assert {client.get("/api/v1/notifications", headers=bearer(t)).status_code for t in random_kids} == {401}
    assert key_set.fetches == before  # the keys were fetched less than a cooldown ago


def test_a_new_kid_is_found_by_one_refetch(keys, tmp_path):
    key_set, url = keys
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}", "JWKS_URL": url,
                      "JWKS_REFETCH_COOLDOWN_SECONDS": "0"})
    with app.app_context():
        upgrade(directory=MIGRATIONS)
    client = app.test_client()
    assert client.get("/api/v1/notifications", headers=bearer(key_set.token(sub=1))).status_code == 200
    key_set.private["k2"] = Ed25519PrivateKey.generate()  # rotation: the new key is published
    try:
        before = key_set.fetches
        token = key_set.token(sub=1, kid="k2")
        statuses = {client.get("/api/v1/notifications", headers=bearer(token)).status_code for _ in range(10)}
        assert statuses == {200}
        assert key_set.fetches - before == 1
    finally:
        del key_set.private["k2"]


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/livez", 200), ("GET", "/openapi.json", 200), ("GET", "/metrics", 200),
    ("GET", "/api/v1/notifications?user_id=1", 401), ("GET", "/nowhere", 404),
    ("DELETE", "/api/v1/notifications", 405)])
def test_every_response_carries_the_users_services_security_headers(client, method, path, status):
    from app.platform.security import API_CSP, HEADERS

    response = client.open(path, method=method)
    assert response.status_code == status
    for name, value in HEADERS.items():
        assert response.headers.getlist(name) == [value], name
    assert response.headers.getlist("Content-Security-Policy") == [API_CSP]
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers


def test_the_notifier_docs_page_gets_its_own_csp(client):
    from app.platform.security import docs_csp

    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == docs_csp(page.get_data())
    assert "script-src 'self' 'sha256-" in page.headers["Content-Security-Policy"]


def test_a_database_that_cannot_be_reached_is_a_503_to_retry(keys):
    """Like the users service: an outage is 503 with Retry-After, not a 500 bug report."""
    app = create_app({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/notifier", "JWKS_URL": keys[1]})
    answer = app.test_client().get("/api/v1/notifications", headers=bearer(keys[0].token(sub=1)))
    assert answer.status_code == 503, answer.get_data(as_text=True)
    assert answer.headers["Retry-After"] == "5" and answer.mimetype == "application/problem+json"
    assert answer.get_json()["detail"] == "The database is unavailable; retry later."
