"""EdDSA tokens and the published key set: the JWKS endpoint, the settings' checks and the key
rotation procedure of app/README.md, step by step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from conftest import assert_problem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app import create_app
from app.auth.tokens import issue_token
from app.config import ConfigError
from app.keys import public_jwk

ROOT = Path(__file__).resolve().parents[1]


def new_key() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return key, pem


def published(*pairs: tuple[str, Ed25519PrivateKey]) -> str:
    return json.dumps({"keys": [public_jwk(kid, key.public_key()) for kid, key in pairs]})


def test_the_key_set_is_published_with_cache_control(client, app):
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == f"public, max-age={app.config['JWKS_MAX_AGE_SECONDS']}"
    (jwk,) = response.get_json()["keys"]
    assert jwk.keys() == {"kty", "crv", "alg", "use", "kid", "x"}  # no private part ("d")
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"], jwk["kid"]) == (
        "OKP", "Ed25519", "EdDSA", "sig", app.config["JWT_KEY_ID"])


def test_a_token_verifies_with_the_published_key_alone(client, app, make_user):
    """What the notifier does: the JWKS and nothing else verifies the service's tokens."""
    user = make_user()
    token, _ = issue_token(user.id, user.role.value, user.token_version)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] == app.config["JWT_KEY_ID"]
    keys = jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").get_json())
    claims = jwt.decode(token, keys[header["kid"]], algorithms=["EdDSA"],
                        audience=app.config["JWT_AUDIENCE"], issuer=app.config["JWT_ISSUER"])
    assert claims["sub"] == str(user.id)


def test_rotation_publish_then_sign_then_drop(app, make_user, database_url):
    """The procedure: (1) publish K2 beside K1, (2) sign with K2 and keep K1 published while its
    tokens live, (3) drop K1: its tokens get 401, K2's keep working."""
    k1, k1_pem = new_key()
    k2, k2_pem = new_key()
    user = make_user()

    def service(pem: str, kid: str, extra: str = "") -> object:
        return create_app({"DATABASE_URL": database_url, "JWT_PRIVATE_KEY": pem, "JWT_KEY_ID": kid,
                           "JWT_EXTRA_PUBLIC_KEYS": extra})

    def token(svc: object) -> str:
        with svc.app_context():  # type: ignore[attr-defined]
            return issue_token(user.id, user.role.value, user.token_version)[0]

    def status(svc: object, bearer: str) -> int:
        client = svc.test_client()  # type: ignore[attr-defined]
        return client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {bearer}"}).status_code

    def kids(svc: object) -> list[str]:
        client = svc.test_client()  # type: ignore[attr-defined]
        return [k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]]

    before = service(k1_pem, "k1")
    old = token(before)
    step1 = service(k1_pem, "k1", published(("k2", k2)))
    assert kids(step1) == ["k1", "k2"] and status(step1, old) == 200
    assert jwt.get_unverified_header(token(step1))["kid"] == "k1"  # K2 does not sign yet
    step2 = service(k2_pem, "k2", published(("k1", k1)))
    new = token(step2)
    assert jwt.get_unverified_header(new)["kid"] == "k2"
    assert kids(step2) == ["k2", "k1"] and status(step2, old) == 200 and status(step2, new) == 200
    step3 = service(k2_pem, "k2")
    assert kids(step3) == ["k2"] and status(step3, new) == 200
    response = step3.test_client().get("/api/v1/users/me", headers={"Authorization": f"Bearer {old}"})
    assert_problem(response, 401)


@pytest.mark.parametrize("extra, message", [
    ("not json", "JWT_EXTRA_PUBLIC_KEYS: must be a JWKS document"),
    ('{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}',
     "JWT_EXTRA_PUBLIC_KEYS: every key needs a kid"),
    ('{"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]}', "not an Ed25519"),
    ("PRIVATE", "holds a private part"),
    ("TWICE", "appears twice"),
    ("OUR_KID_OTHER_KEY", "JWT_KEY_ID's but names another key"),
])
def test_bad_extra_keys_are_refused_at_start(extra, message):
    other, _ = new_key()
    jwk = public_jwk("x", other.public_key())
    extra = {
        "PRIVATE": json.dumps({"keys": [{**jwk, "d": "AAAA"}]}),
        "TWICE": json.dumps({"keys": [jwk, jwk]}),
        "OUR_KID_OTHER_KEY": published(("dev-2026", other)),
    }.get(extra, extra)
    with pytest.raises(ConfigError, match=message):
        create_app({"JWT_EXTRA_PUBLIC_KEYS": extra})


def test_a_non_ed25519_private_key_is_refused():
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(ConfigError, match="JWT_PRIVATE_KEY: must be an Ed25519 key"):
        create_app({"JWT_PRIVATE_KEY": pem, "JWT_KEY_ID": "ec"})


def test_the_key_file_setting_and_the_jwk_helper(tmp_path):
    _, pem = new_key()
    path = tmp_path / "jwt.pem"
    path.write_text(pem)
    app = create_app({"JWT_PRIVATE_KEY_FILE": str(path), "JWT_KEY_ID": "from-file"})
    (jwk,) = app.test_client().get("/.well-known/jwks.json").get_json()["keys"]
    printed = subprocess.run([sys.executable, "-m", "app.keys", "from-file"], input=pem, text=True,
                             capture_output=True, check=True, cwd=ROOT, timeout=60).stdout
    assert json.loads(printed) == {"keys": [jwk]}
    refused = subprocess.run([sys.executable, "-m", "app.keys", "k"], input="nope", text=True,
                             capture_output=True, cwd=ROOT, timeout=60)
    assert refused.returncode == 1 and "not an unencrypted PEM private key" in refused.stderr


def test_the_start_check_refuses_a_kid_missing_from_or_wrong_in_the_published_set():
    from app.keys import SigningKeys

    key, _ = new_key()
    other, _ = new_key()
    SigningKeys("k", key, {"k": key.public_key()}).self_check()  # the control case
    with pytest.raises(ValueError, match="not in the published key set"):
        SigningKeys("k", key, {"j": key.public_key()}).self_check()
    with pytest.raises(ValueError, match="does not verify"):
        SigningKeys("k", key, {"k": other.public_key()}).self_check()
