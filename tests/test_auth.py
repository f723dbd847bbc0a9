"""The token endpoint and the JWT negative cases: each must answer 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from conftest import PASSWORD, assert_problem, bearer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.auth.tokens import decode_token, issue_token, signing_keys

OTHER_ED25519 = Ed25519PrivateKey.generate()
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_token_for_valid_credentials(client, make_user, app):
    user = make_user()
    response = client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == app.config["JWT_TTL_SECONDS"]
    claims = decode_token(body["access_token"])
    assert claims["sub"] == str(user.id)
    assert {"exp", "iat", "iss", "aud", "jti"} <= claims.keys()


@pytest.mark.parametrize("email, password", [
    ("user1@example.com", "wrong password"),
    ("nobody@example.com", PASSWORD),
])
def test_wrong_credentials_are_401(client, make_user, email, password):
    make_user(email="user1@example.com")
    response = client.post("/api/v1/auth/token", json={"email": email, "password": password})
    body = assert_problem(response, 401)
    assert body["detail"] == "Wrong email or password."
    assert "WWW-Authenticate" in response.headers


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(app, user_id: int, **changes) -> dict:
    now = int(time.time())
    claims = {"sub": str(user_id), "iat": now, "exp": now + 300, "iss": app.config["JWT_ISSUER"],
              "aud": app.config["JWT_AUDIENCE"]}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(app, claims: dict, key: object = None, algorithm: str = "EdDSA", kid: str | None = "") -> str:
    """Signed like the service signs (its key, EdDSA, its kid) unless told otherwise."""
    keys = signing_keys()
    headers = {"kid": keys.kid if kid == "" else kid} if kid is not None else None
    return jwt.encode(claims, key or keys.private_key, algorithm=algorithm, headers=headers)


def _hmac_forged(app, claims: dict, secret: bytes) -> str:
    """An HS256 token MACed with ``secret``, built by hand: PyJWT refuses to make one with a key
    that looks public (that refusal is the library's own half of this defence)."""
    header = {"alg": "HS256", "typ": "JWT", "kid": signing_keys().kid}
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _public_pem() -> bytes:
    return signing_keys().private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _public_jwk_json() -> bytes:
    return json.dumps(signing_keys().jwks["keys"][0]).encode()


BAD_TOKENS = {
    "alg none": lambda app, uid: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(app, uid))}.",
    "alg none with our kid": lambda app, uid: (
        f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': signing_keys().kid})}.{_b64(_claims(app, uid))}."),
    "wrong key under our kid": lambda app, uid: _signed(app, _claims(app, uid), key=OTHER_ED25519),
    "HS256 keyed with the public PEM": lambda app, uid: _hmac_forged(app, _claims(app, uid), _public_pem()),
    "HS256 keyed with the public JWK JSON": lambda app, uid: _hmac_forged(app, _claims(app, uid),
                                                                          _public_jwk_json()),
    "RS256 where only EdDSA is allowed": lambda app, uid: _signed(app, _claims(app, uid), key=RSA_KEY,
                                                                  algorithm="RS256"),
    "unknown kid": lambda app, uid: _signed(app, _claims(app, uid), kid="not-published"),
    "no kid": lambda app, uid: _signed(app, _claims(app, uid), kid=None),
    "expired": lambda app, uid: _signed(app, _claims(app, uid, iat=int(time.time()) - 3600,
                                                      exp=int(time.time()) - 600)),
    "wrong audience": lambda app, uid: _signed(app, _claims(app, uid, aud="someone-else")),
    "wrong issuer": lambda app, uid: _signed(app, _claims(app, uid, iss="evil")),
    "no exp": lambda app, uid: _signed(app, _claims(app, uid, exp=None)),
    "no iat": lambda app, uid: _signed(app, _claims(app, uid, iat=None)),
    "no aud": lambda app, uid: _signed(app, _claims(app, uid, aud=None)),
    "no iss": lambda app, uid: _signed(app, _claims(app, uid, iss=None)),
    "non-numeric sub": lambda app, uid: _signed(app, _claims(app, uid, sub="admin")),
    # Digits to str.isdigit(), not to int() or to an ASCII reader: "\u00b2" made int() raise (a 500).
    "superscript sub": lambda app, uid: _signed(app, _claims(app, uid, sub="\u00b2")),
    "full-width sub": lambda app, uid: _signed(app, _claims(app, uid, sub="\uff11")),
    "arabic-indic sub": lambda app, uid: _signed(app, _claims(app, uid, sub="\u0661")),
    "sub beyond int digits": lambda app, uid: _signed(app, _claims(app, uid, sub="9" * 5000)),
    "sub beyond ids": lambda app, uid: _signed(app, _claims(app, uid, sub=str(2**31))),
    "garbage": lambda app, uid: "not.a.jwt",
    "tampered payload": lambda app, uid: (lambda t: t.split(".")[0] + "." + _b64(_claims(app, uid + 1))
                                          + "." + t.split(".")[2])(_signed(app, _claims(app, uid))),
}


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_bad_tokens_are_401(client, make_user, app, case):
    user = make_user()
    token = BAD_TOKENS[case](app, user.id)
    response = client.post("/api/v1/users", headers={"Authorization": f"Bearer {token}"},
                           json={"email": "x@example.com", "name": "X", "password": "long-enough"})
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="lookout"'


@pytest.mark.parametrize("case", [c for c in BAD_TOKENS if "sub" in c])
def test_a_read_with_a_bad_subject_is_401(client, make_user, app, case):
    user = make_user()
    token = BAD_TOKENS[case](app, user.id)
    response = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401)


def test_control_case_a_good_token_passes(client, make_user, app):
    """The same construction as the bad cases, unbroken, is accepted (the cases can fail)."""
    user = make_user()
    token = _signed(app, _claims(app, user.id))
    response = client.post("/api/v1/users", headers={"Authorization": f"Bearer {token}"},
                           json={"email": "x@example.com", "name": "X", "password": "long-enough"})
    assert response.status_code == 201


def test_token_of_deleted_user_is_401(client, make_user, admin_headers):
    user = make_user()
    headers = bearer(user)
    assert client.delete(f"/api/v1/users/{user.id}", headers=admin_headers).status_code == 204
    assert_problem(client.patch(f"/api/v1/users/{user.id}", json={"name": "ghost"}, headers=headers), 401)


def test_a_deleted_users_token_does_not_pass_for_whoever_gets_the_id_next(client, make_user, app,
                                                                            admin_headers):
    """SQLite gives a deleted last row's id to the next user; the old token must not follow it."""
    from datetime import UTC, datetime, timedelta

    from app.extensions import db

    user = make_user(email="gone@example.com")
    user.created_at = datetime.now(UTC) - timedelta(minutes=1)
    db.session.commit()
    issued_earlier = _claims(app, user.id, iat=int(time.time()) - 30)  # a login 30 s ago (leeway 10 s)
    headers = {"Authorization": f"Bearer {_signed(app, issued_earlier)}"}
    still_mine = client.patch(f"/api/v1/users/{user.id}", json={"name": "Still Me"}, headers=headers)
    assert still_mine.status_code == 200
    assert client.delete(f"/api/v1/users/{user.id}", headers=admin_headers).status_code == 204
    created = client.post("/api/v1/users", headers=admin_headers,
                          json={"email": "next@example.com", "name": "Next", "password": "long-enough"})
    assert created.status_code == 201
    assert_problem(client.patch(f"/api/v1/users/{created.get_json()['id']}", json={"name": "taken over"},
                                headers=headers), 401)
    fetched = client.get(f"/api/v1/users/{created.get_json()['id']}", headers=admin_headers)
    assert fetched.get_json()["name"] == "Next"


def test_a_token_carries_the_users_version_and_only_that_version_passes(client, make_user, app):
    """Tokens from before versions existed (no "ver") pass as version 0, so a rolling deploy logs
    nobody out; after a password change only tokens of the new version pass."""
    from app.extensions import db

    user = make_user()
    token = client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD}).get_json()
    assert decode_token(token["access_token"])["ver"] == 0

    def patch_with(claims: dict):
        headers = {"Authorization": f"Bearer {_signed(app, claims)}"}
        return client.patch(f"/api/v1/users/{user.id}", json={"name": "Me"}, headers=headers)

    assert patch_with(_claims(app, user.id)).status_code == 200  # no "ver" claim
    user.token_version = 3
    db.session.commit()
    for stale in (None, 0, 2, 4, "3"):
        assert_problem(patch_with(_claims(app, user.id, ver=stale)), 401)
    assert patch_with(_claims(app, user.id, ver=3)).status_code == 200


def test_tokens_expire_after_ttl(app, make_user, monkeypatch):
    user = make_user()
    issued_at = time.time() - app.config["JWT_TTL_SECONDS"] - app.config["JWT_LEEWAY_SECONDS"] - 1
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: issued_at)
        token, _ = issue_token(user.id, "user")
    assert decode_token(token) is None
    fresh, _ = issue_token(user.id, "user")
    assert decode_token(fresh) is not None
