"""The token signing key and the published key set (JWKS), built from the settings.

The users service signs access tokens with EdDSA (Ed25519) and names the key in the token's
``kid`` header; verifiers (this service and the notifier) fetch the public keys from
``GET /.well-known/jwks.json``. Settings: JWT_PRIVATE_KEY (PEM), JWT_KEY_ID, and
JWT_EXTRA_PUBLIC_KEYS (a JWKS document of keys published besides the signing one, for rotation:
app/README.md). Only this module and app/auth/tokens.py touch key material.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import OKPAlgorithm

ALGORITHM = "EdDSA"  # the one algorithm tokens are signed and verified with


def parse_private_key(pem: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``pem`` (PKCS#8, unencrypted), or ValueError saying why not."""
    try:
        key = load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("must be an Ed25519 key (openssl genpkey -algorithm ed25519)")
    return key


def parse_public_keys(document: str) -> dict[str, Ed25519PublicKey]:
    """The keys of a JWKS document by kid; ValueError for anything but Ed25519 public keys."""
    if not document.strip():
        return {}
    try:
        keys = json.loads(document)["keys"]
        if not isinstance(keys, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ValueError('must be a JWKS document: {"keys": [...]}') from None
    found: dict[str, Ed25519PublicKey] = {}
    for jwk in keys:
        if not isinstance(jwk, dict) or not isinstance(kid := jwk.get("kid"), str) or not kid:
            raise ValueError("every key needs a kid")
        if "d" in jwk:
            raise ValueError(f"key {kid!r} holds a private part; publish public keys only")
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ValueError(f"key {kid!r} is not an Ed25519 (OKP) key")
        if kid in found:
            raise ValueError(f"kid {kid!r} appears twice")
        try:
            key = OKPAlgorithm.from_jwk(jwk)
        except (jwt.InvalidKeyError, ValueError) as exc:
            raise ValueError(f"key {kid!r} cannot be read ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"key {kid!r} is not an Ed25519 public key")
        found[kid] = key
    return found


def public_jwk(kid: str, key: Ed25519PublicKey) -> dict[str, Any]:
    jwk: dict[str, Any] = OKPAlgorithm.to_jwk(key, as_dict=True)
    return {**jwk, "alg": ALGORITHM, "use": "sig", "kid": kid}


@dataclass(frozen=True)
class SigningKeys:
    kid: str
    private_key: Ed25519PrivateKey
    verifying: dict[str, Ed25519PublicKey] = field(default_factory=dict)  # every published key by kid

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(kid, key) for kid, key in self.verifying.items()]}

    def self_check(self) -> None:
        """Sign a probe and verify it as a verifier would, with the key published under our kid:
        a kid the set lacks, or that names another key, fails here at start and not on every
        token later."""
        probe = jwt.encode({"probe": True}, self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid})
        published = {jwk["kid"]: jwk for jwk in self.jwks["keys"]}
        if self.kid not in published:
            raise ValueError(f"the signing kid {self.kid!r} is not in the published key set")
        try:
            jwt.decode(probe, jwt.PyJWK(published[self.kid]), algorithms=[ALGORITHM])
        except jwt.InvalidTokenError:
            raise ValueError(
                f"the key published as {self.kid!r} does not verify the signing key's tokens") from None


def load_keys(private_pem: str, kid: str, extra_public: str) -> SigningKeys:
    """Build and check the keys; ValueError naming the setting that is wrong."""
    try:
        private_key = parse_private_key(private_pem)
    except ValueError as exc:
        raise ValueError(f"JWT_PRIVATE_KEY: {exc}") from None
    try:
        extra = parse_public_keys(extra_public)
    except ValueError as exc:
        raise ValueError(f"JWT_EXTRA_PUBLIC_KEYS: {exc}") from None
    own = private_key.public_key()
    if kid in extra and extra[kid].public_bytes_raw() != own.public_bytes_raw():
        raise ValueError(f"JWT_EXTRA_PUBLIC_KEYS: kid {kid!r} is JWT_KEY_ID's but names another key")
    keys = SigningKeys(kid, private_key, {kid: own, **{k: v for k, v in extra.items() if k != kid}})
    try:
        keys.self_check()
    except ValueError as exc:
        raise ValueError(f"JWT_KEY_ID: {exc}") from None
    return keys


def main(argv: list[str] | None = None) -> int:
    """``python -m app.keys KID < private.pem``: print the JWKS document publishing that key's
    public half under KID, the value of JWT_EXTRA_PUBLIC_KEYS in a rotation (app/README.md)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m app.keys KID < private-key.pem", file=sys.stderr)
        return 2
    try:
        key = parse_private_key(sys.stdin.read())
    except ValueError as exc:
        print(f"stdin {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"keys": [public_jwk(args[0], key.public_key())]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
