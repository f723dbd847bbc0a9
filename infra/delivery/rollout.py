"""Deploy an image to a stack, smoke test it, and roll back to the previous image when it fails.

Usage:
    python -m infra.delivery.rollout --stack staging --image ghcr.io/lookout/lookout@sha256:... \
        [--expect-commit SHA] [--url https://staging.example.com] [--allow-tag]

Steps: read the image the stack runs now (its ``image`` output), ``pulumi config set image``,
``pulumi up``; when the stack releases a canary (its ``rollout`` output names the Argo Rollouts
``Rollout``), wait until the controller has promoted it, sending a trickle of smoke requests to
the service meanwhile so the canary has traffic to be judged on; then smoke test the service
(``--url``, else the ``loadBalancerAddress`` output). When ``pulumi up`` fails, the canary is
aborted (its SLO analysis failed), cannot be judged, or the smoke test fails, the stack goes back
to the previous image with another ``pulumi up`` (for an aborted canary the controller already
sent every pod back to the stable revision: this makes the stack say so) and is smoke tested
again; the command still exits 1, so the pipeline stops there. Images are deployed by digest: a
tag could point elsewhere by the time a rollback needs it; ``--require-signature`` refuses an
image the deploy workflow did not sign (infra/delivery/signature.py).

The stack's secrets (secretKey, jwtPrivateKey, bootstrapAdminPassword, databaseUrl) stay where
Pulumi keeps them, encrypted in infra/Pulumi.<stack>.yaml; the pipeline needs only the backend's
credentials and the cluster's. The smoke test logs in as the stack's bootstrap admin
(``pulumi config get``), or as LOOKOUT_SMOKE_EMAIL / LOOKOUT_SMOKE_PASSWORD when both are set.

Environment variables read: KUBECONFIG_DATA (a kubeconfig's text, written to a private temporary
file for the Pulumi and kubectl runs), KUBECTL (default ``kubectl``), CANARY_TIMEOUT (seconds a
canary gets to be promoted, default 1800), GITHUB_STEP_SUMMARY, GITHUB_OUTPUT, and the Pulumi
CLI's (see pulumi_cli.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from infra.delivery import signature
from infra.delivery.pulumi_cli import PulumiError, PulumiStack
from infra.delivery.smoke import SmokeReport, credentials_from, normalise, publish, smoke
from infra.stack_config import schema

DIGEST_REF = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")


class RolloutError(ValueError):
    """The request cannot be carried out as asked (for example an image given by tag)."""


def check_image(image: str, allow_tag: bool = False) -> str:
    """Return ``image`` when it is a digest reference (or a tag, when ``allow_tag``)."""
    if DIGEST_REF.match(image) or (allow_tag and image and "@" not in image):
        return image
    raise RolloutError(f"{image!r} is not an image by digest (name@sha256:<64 hex>); "
                       "a tag can move, so the rollback would not get back what ran before")


def rollback_target(previous: str | None, new: str) -> str | None:
    """Return the image to go back to after a failed deploy of ``new``, or None when there is none.

    None on a first deploy (no previous image) and when the stack already ran ``new`` (a redeploy
    of the same image that fails now would fail again: the cause is elsewhere).
    """
    if not previous or previous == new:
        return None
    return previous


@dataclass(frozen=True)
class Outcome:
    status: str  # deployed | rolled-back | rollback-failed | failed
    image: str
    previous: str | None
    url: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "deployed"


Smoker = Callable[[str, str | None], SmokeReport]


class CanaryFailed(RuntimeError):
    """The controller aborted the canary, or it could not be judged in time."""


class CanaryWatch:
    """Follow an Argo Rollouts ``Rollout`` with kubectl until it is promoted, aborted or stuck."""

    def __init__(self, env: Mapping[str, str] | None = None, timeout: float | None = None,
                 poll: float = 10.0) -> None:
        self.env = dict(os.environ if env is None else env)
        self.kubectl = self.env.get("KUBECTL", "kubectl")
        self.timeout = timeout if timeout is not None else float(self.env.get("CANARY_TIMEOUT", "1800"))
        self.poll = poll

    def status(self, namespace: str, name: str) -> dict[str, object]:
        done = subprocess.run([self.kubectl, "get", "rollout", name, "-n", namespace, "-o", "json"],
                              env=self.env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise CanaryFailed(f"kubectl get rollout {namespace}/{name} failed: {done.stderr.strip()[-500:]}")
        return dict(json.loads(done.stdout).get("status") or {})

    def wait(self, namespace: str, name: str) -> str:
        """Return the promoted revision's hash; raise CanaryFailed on an abort, a pause for judgement
        (an inconclusive analysis) or the timeout."""
        deadline = time.monotonic() + self.timeout
        last = ""
        while True:
            status = self.status(namespace, name)
            phase, message = str(status.get("phase", "")), str(status.get("message", ""))
            if f"{phase}: {message}" != last:
                last = f"{phase}: {message}"
                print(f"rollout: canary {namespace}/{name}: {last}", flush=True)
            reasons = {str(c.get("reason")) for c in status.get("pauseConditions") or []  # type: ignore[union-attr]
                       if isinstance(c, dict)}
            if status.get("abort") or phase == "Degraded":
                raise CanaryFailed(f"the canary was aborted: {message or phase}")
            if "InconclusiveAnalysis" in reasons:
                raise CanaryFailed("the canary could not be judged (inconclusive analysis): "
                                   "did it get traffic?")
            if phase == "Healthy" and status.get("stableRS") and status.get("stableRS") == status.get(
                    "currentPodHash"):
                return str(status["stableRS"])
            if time.monotonic() > deadline:
                raise CanaryFailed(f"the canary was not promoted within {self.timeout:.0f}s ({last})")
            time.sleep(self.poll)


@contextlib.contextmanager
def trickle(url: str | None, interval: float = 0.2,
            headers: Mapping[str, str] | None = None) -> Iterator[None]:
    """Send read requests to ``url`` in the background (a canary needs traffic to be judged);
    ``headers`` carry a token, so the reads are the API's real work rather than 401s."""
    if not url:
        yield
        return
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            for path in ("/api/v1/users", "/"):
                request = urllib.request.Request(f"{url}{path}", headers=dict(headers or {}))  # noqa: S310
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - the service

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def bearer(url: str | None, credentials: tuple[str, str] | None) -> dict[str, str]:
    """Log in at ``url``; return the Authorization header, or none when that is not possible."""
    if not url or not credentials:
        return {}
    with contextlib.suppress(requests.RequestException, ValueError):
        answer = requests.post(f"{url}/api/v1/auth/token", timeout=10,
                               json={"email": credentials[0], "password": credentials[1]})
        if answer.status_code == 200:
            return {"Authorization": f"Bearer {answer.json()['access_token']}"}
    return {}


def admin_credentials(stack: PulumiStack, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The smoke test's account: LOOKOUT_SMOKE_* when set, else the stack's bootstrap admin."""
    if given := credentials_from(environ):
        return given
    password = stack.config("bootstrapAdminPassword")  # the CLI decrypts it for the stack's owner
    if not password:
        return None
    return stack.config("bootstrapAdminEmail") or str(schema()["bootstrapAdminEmail"].default), password


class Rollout:
    def __init__(self, stack: PulumiStack, smoker: Smoker | None = None, wait: float = 180.0,
                 watch: CanaryWatch | None = None) -> None:
        self.stack = stack
        self.credentials: tuple[str, str] | None = None  # read from the stack when the run starts
        self.smoker: Smoker = smoker or (lambda url, commit: smoke(url, commit, wait, self.credentials))
        self.watch = watch or CanaryWatch(stack.env)

    def _deploy(self, image: str, url: str | None = None) -> None:
        self.stack.set_config("image", image)
        self.stack.up()
        outputs = self.stack.outputs()
        if outputs.get("rollout"):
            target = None
            with contextlib.suppress(RolloutError):
                target = self._url(url)
            with trickle(target, headers=bearer(target, self.credentials)):
                self.watch.wait(str(outputs.get("namespace") or "default"), str(outputs["rollout"]))

    def _url(self, url: str | None) -> str:
        if url:
            return normalise(url)
        outputs = self.stack.outputs()
        public = str(outputs.get("serviceUrl") or "")
        if public.startswith("https://"):  # the edge's name: its certificate is for that name only
            return normalise(public)
        address = str(outputs.get("loadBalancerAddress") or "")
        if not address:
            raise RolloutError("the stack has no loadBalancerAddress output and no --url was given")
        return normalise(address)

    def run(self, image: str, expect_commit: str | None = None, url: str | None = None,
            secrets: dict[str, str] | None = None) -> Outcome:
        self.stack.select()
        for key, value in (secrets or {}).items():
            self.stack.set_config(key, value, secret=True)
        self.credentials = admin_credentials(self.stack, os.environ)
        previous = self.stack.outputs().get("image") or None
        print(f"rollout: {self.stack.stack}: {previous or '(nothing yet)'} -> {image}", flush=True)
        failure = ""
        try:
            self._deploy(image, url)
            target_url = self._url(url)
            report = self.smoker(target_url, expect_commit)
            publish(report)
            if report.ok:
                return Outcome("deployed", image, previous, target_url,
                               f"{image} is live on {self.stack.stack}")
            failure = "the smoke test failed"
        except PulumiError as exc:
            failure, target_url = f"pulumi up failed: {str(exc).splitlines()[0]}", url or ""
        except CanaryFailed as exc:
            failure, target_url = str(exc), url or ""
        back = rollback_target(previous, image)
        if back is None:
            why = "there is no previous image" if not previous else "the previous image is this one"
            return Outcome("failed", image, previous, target_url, f"{failure}; no rollback: {why}")
        print(f"rollout: {failure}; rolling {self.stack.stack} back to {back}", flush=True)
        try:
            self._deploy(back, url)
            target_url = self._url(url)
            report = self.smoker(target_url, None)
            publish(report)
        except (PulumiError, CanaryFailed) as exc:
            return Outcome("rollback-failed", image, previous, target_url,
                           f"{failure}; the rollback to {back} failed too: {str(exc).splitlines()[0]}")
        if not report.ok:
            return Outcome("rollback-failed", image, previous, target_url,
                           f"{failure}; rolled back to {back}, which fails its smoke test too")
        return Outcome("rolled-back", image, previous, target_url, f"{failure}; rolled back to {back}")


@contextlib.contextmanager
def kubeconfig(environ: dict[str, str]) -> Iterator[dict[str, str]]:
    """Yield the environment for Pulumi, with KUBECONFIG_DATA (if any) as a private file in KUBECONFIG."""
    data = environ.get("KUBECONFIG_DATA")
    if not data:
        yield environ
        return
    with tempfile.TemporaryDirectory(prefix="kube-") as folder:
        path = Path(folder) / "config"
        path.touch(mode=0o600)
        path.write_text(data)
        yield {k: v for k, v in environ.items() if k != "KUBECONFIG_DATA"} | {"KUBECONFIG": str(path)}


def report(outcome: Outcome, stack: str) -> None:
    """Print the outcome; add it to the job summary and the step outputs on GitHub."""
    print(f"rollout: {outcome.status}: {outcome.message}", flush=True)
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with Path(summary).open("a") as out:
            out.write(f"### Deploy to {stack}: {outcome.status}\n\n| | |\n|---|---|\n"
                      f"| image | `{outcome.image}` |\n| previous | `{outcome.previous or '-'}` |\n"
                      f"| address | {outcome.url or '-'} |\n| result | {outcome.message} |\n\n")
    if outputs := os.environ.get("GITHUB_OUTPUT"):
        with Path(outputs).open("a") as out:
            out.write(f"status={outcome.status}\nurl={outcome.url}\nprevious={outcome.previous or ''}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True, help="Pulumi stack (staging, prod)")
    parser.add_argument("--image", required=True, help="image by digest: name@sha256:<64 hex>")
    parser.add_argument("--expect-commit", default="", help="commit the new build must report at /")
    parser.add_argument("--url", default="",
                        help="address to smoke test (default: the stack's load balancer)")
    parser.add_argument("--allow-tag", action="store_true", help="accept an image by tag (local clusters)")
    parser.add_argument("--require-signature", action="store_true",
                        help="refuse the image unless this repository's deploy workflow signed it (cosign)")
    parser.add_argument("--wait", type=float, default=180.0, help="seconds the service gets to become ready")
    args = parser.parse_args(argv)
    try:
        image = check_image(args.image, args.allow_tag)
        if args.require_signature:
            signature.verify(image)
        with kubeconfig(dict(os.environ)) as env:
            outcome = Rollout(PulumiStack(args.stack, env=env), wait=args.wait).run(
                image, args.expect_commit or None, args.url or None)
    except (RolloutError, PulumiError, signature.SignatureError) as exc:
        print(f"rollout: {exc}", file=sys.stderr)
        return 2
    report(outcome, args.stack)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
