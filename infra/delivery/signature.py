"""Keyless signatures of the image: sign it where it is built, verify it before any deploy.

Usage:
    python -m infra.delivery.signature sign   IMAGE@sha256:...   # deploy.yml, job image (OIDC token)
    python -m infra.delivery.signature verify IMAGE@sha256:...   # before `pulumi up` (rollout.py does it too)

cosign signs with a short-lived certificate from the workflow's OIDC identity (Sigstore's Fulcio,
logged in Rekor): no key to keep. Verification demands a signature whose certificate names the
deploy workflow of this repository on main (``signer_identity``) and GitHub's OIDC issuer, over
exactly this digest: an image built anywhere else, or not signed at all, is refused.

Environment variables read: COSIGN (the cosign to run, default ``cosign``), GITHUB_SERVER_URL,
GITHUB_REPOSITORY (whose deploy workflow must have signed), SIGNER_IDENTITY (overrides the whole
identity pattern).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

ISSUER = "https://token.actions.githubusercontent.com"
DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")


class SignatureError(RuntimeError):
    """The image is not signed by the expected identity (or cannot be checked)."""


def signer_identity(environ: dict[str, str] | None = None) -> str:
    """The certificate identity a release must carry: deploy.yml of this repository, on main."""
    env = os.environ if environ is None else environ
    if env.get("SIGNER_IDENTITY"):
        return env["SIGNER_IDENTITY"]
    repository = env.get("GITHUB_REPOSITORY")
    if not repository:
        raise SignatureError("GITHUB_REPOSITORY is not set: whose deploy workflow must have signed?")
    server = env.get("GITHUB_SERVER_URL", "https://github.com")
    return f"^{re.escape(server)}/{re.escape(repository)}/\\.github/workflows/deploy\\.yml@refs/heads/main$"


def _cosign() -> str:
    return os.environ.get("COSIGN", "cosign")


def _digest(image: str) -> str:
    match = DIGEST.search(image)
    if not match:
        raise SignatureError(f"{image!r} is not an image by digest: a signature covers a digest, not a tag")
    return match.group(1)


def sign(image: str) -> None:
    """Sign ``image`` (by digest) keylessly; the signature goes to the image's registry."""
    _digest(image)
    done = subprocess.run([_cosign(), "sign", "--yes", image], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SignatureError(f"cosign sign {image} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def verify(image: str, identity: str | None = None) -> int:
    """Return how many valid signatures by ``identity`` cover ``image``'s digest; raise when none does."""
    digest = _digest(image)
    identity = identity or signer_identity()
    command = [_cosign(), "verify", "--certificate-identity-regexp", identity,
               "--certificate-oidc-issuer", ISSUER, "--output", "json", image]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SignatureError(f"{image} has no valid signature by {identity}:\n{done.stderr[-2000:]}")
    try:
        payloads = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise SignatureError(f"cosign verify printed no JSON: {exc}") from None
    signed = [p for p in payloads
              if p.get("critical", {}).get("image", {}).get("docker-manifest-digest") == digest]
    if not signed:
        raise SignatureError(f"cosign verified signatures, but none covers {digest}")
    return len(signed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("sign", "verify"))
    parser.add_argument("image", help="name@sha256:<64 hex>")
    args = parser.parse_args(argv)
    try:
        if args.action == "sign":
            sign(args.image)
            print(f"signature: signed {args.image}")
        else:
            count = verify(args.image)
            print(f"signature: {args.image}: {count} signature(s) by {signer_identity()}")
    except SignatureError as exc:
        print(f"signature: REFUSED {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
