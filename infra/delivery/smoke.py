"""Smoke test a running Lookout: ready, the expected build, the API answering as documented.

Usage:
    python -m infra.delivery.smoke URL [--expect-commit SHA] [--wait 180]
    python -m infra.delivery.smoke --local          # start a local gunicorn first (make smoke)

The checks are read-only (no user is created), so they are safe against production. Reads of
the API need a token: the smoke test logs in as an admin of the service (the stack's bootstrap
admin, see infra/README.md) and sends the token with every API read. The service is first given
up to ``--wait`` seconds to answer /readyz (a new load balancer takes a while to route); every
check after that gets three tries against connection errors only.

Environment variables read: LOOKOUT_SMOKE_EMAIL and LOOKOUT_SMOKE_PASSWORD (the admin to log in
as; ``--local`` makes its own), GITHUB_STEP_SUMMARY (a Markdown table is appended when set).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

PROBLEM_JSON = "application/problem+json"
CREDENTIALS = ("LOOKOUT_SMOKE_EMAIL", "LOOKOUT_SMOKE_PASSWORD")
UNKNOWN_USER_ID = 2_000_000_000  # inside the 32-bit id range, never reached by a test database


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class SmokeReport:
    url: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def markdown(self) -> str:
        rows = [f"| {'✅' if c.ok else '❌'} | {c.name} | {c.detail.replace('|', '/')} |"
                for c in self.checks]
        verdict = "passed" if self.ok else "FAILED"
        return "\n".join([f"### Smoke test of {self.url}: {verdict}", "", "| | check | detail |",
                          "|---|---|---|", *rows, ""])

    def text(self) -> str:
        return "\n".join(f"smoke: {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks)


def normalise(url: str) -> str:
    """Accept a bare load balancer address (``203.0.113.7``, ``lb.example.com``) as well as a URL."""
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def commits_match(expected: str, actual: str) -> bool:
    """A short and a full SHA of the same commit match; ``unknown`` never does."""
    expected, actual = expected.strip().lower(), actual.strip().lower()
    if not expected or not actual or "unknown" in (expected, actual):
        return False
    shorter, longer = sorted((expected, actual), key=len)
    return len(shorter) >= 7 and longer.startswith(shorter)


def credentials_from(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """Return (email, password) from LOOKOUT_SMOKE_EMAIL and _PASSWORD; None unless both are set."""
    email, password = (environ.get(name, "") for name in CREDENTIALS)
    return (email, password) if email and password else None


class Smoke:
    def __init__(self, url: str, session: requests.Session | None = None, timeout: float = 5.0,
                 credentials: tuple[str, str] | None = None) -> None:
        self.url = normalise(url)
        self.http = session or requests.Session()
        self.timeout = timeout
        self.credentials = credentials
        self.token_headers: dict[str, str] = {}
        self.report = SmokeReport(self.url)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        last: Exception | None = None
        for attempt in range(3):
            try:
                return self.http.get(self.url + path, timeout=self.timeout, allow_redirects=False, **kwargs)
            except requests.ConnectionError as exc:  # a load balancer still settling; not a wrong answer
                last = exc
                time.sleep(1 + attempt)
        assert last is not None
        raise last

    def check(self, name: str, probe: Callable[[], str]) -> bool:
        """Run one probe: it returns a detail when it passes and raises AssertionError when not."""
        try:
            detail, ok = probe(), True
        except AssertionError as exc:
            detail, ok = str(exc) or "assertion failed", False
        except (requests.RequestException, ValueError) as exc:
            detail, ok = f"{exc.__class__.__name__}: {exc}", False
        self.report.checks.append(Check(name, ok, detail))
        return ok

    def wait_ready(self, wait: float) -> str:
        deadline, last = time.monotonic() + wait, "no answer"
        while True:
            try:
                response = self.http.get(self.url + "/readyz", timeout=self.timeout)
                if response.status_code == 200:
                    return f"200 after {wait - (deadline - time.monotonic()):.1f}s"
                last = f"{response.status_code} {response.text[:200]}"
            except requests.RequestException as exc:
                last = f"{exc.__class__.__name__}"
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"/readyz did not answer 200 within {wait:.0f}s (last: {last})")
            time.sleep(min(2.0, left))

    def run(self, expect_commit: str | None = None, wait: float = 180.0) -> SmokeReport:
        if not self.check("ready", lambda: self.wait_ready(wait)):
            return self.report  # nothing else can pass
        self.check("liveness", self._livez)
        self.check("build", lambda: self._index(expect_commit))
        self.check("openapi", self._openapi)
        self.check("log in", self._login)
        self.check("list users", self._users)
        self.check("unknown user is a 404 problem", self._unknown_user)
        self.check("metrics stay off the public port", self._no_public_metrics)
        self.check("request id echoed", self._request_id)
        return self.report

    def _livez(self) -> str:
        response = self.get("/livez")
        assert response.status_code == 200, f"/livez answered {response.status_code}"
        assert response.json().get("status") == "ok", f"/livez body {response.text[:200]}"
        return "200 ok"

    def _index(self, expect_commit: str | None) -> str:
        response = self.get("/")
        assert response.status_code == 200, f"/ answered {response.status_code}"
        body = response.json()
        assert body.get("service") == "lookout", f"/ names service {body.get('service')!r}"
        commit = str(body.get("commit", ""))
        if expect_commit:
            assert commits_match(expect_commit, commit), (
                f"/ reports commit {commit!r}, expected {expect_commit!r}: the old build is still serving")
        return f"version {body.get('version')}, commit {commit}, environment {body.get('environment')}"

    def _openapi(self) -> str:
        response = self.get("/openapi.json")
        assert response.status_code == 200, f"/openapi.json answered {response.status_code}"
        spec = response.json()
        assert str(spec.get("openapi", "")).startswith("3."), "not an OpenAPI 3 document"
        assert "/api/v1/users" in spec.get("paths", {}), "the spec lacks /api/v1/users"
        return f"OpenAPI {spec['openapi']}, {len(spec['paths'])} paths"

    def _login(self) -> str:
        assert self.credentials, (f"no account to read with: set {' and '.join(CREDENTIALS)} to an admin "
                                  "of the service")
        email, password = self.credentials
        response = self.http.post(self.url + "/api/v1/auth/token", timeout=self.timeout,
                                  json={"email": email, "password": password}, allow_redirects=False)
        assert response.status_code == 200, (
            f"as {email}: answered {response.status_code}: {response.text[:200]}")
        token = response.json().get("access_token")
        assert isinstance(token, str) and token, "the answer has no access_token"
        self.token_headers = {"Authorization": f"Bearer {token}"}
        return f"200, a token for {email}"

    def _users(self) -> str:
        response = self.get("/api/v1/users", params={"page": 1, "per_page": 1}, headers=self.token_headers)
        assert response.status_code == 200, f"answered {response.status_code}: {response.text[:200]}"
        body = response.json()
        assert isinstance(body.get("items"), list) and "pagination" in body, f"body {response.text[:200]}"
        return f"200, {body['pagination'].get('total', '?')} users"

    def _unknown_user(self) -> str:
        response = self.get(f"/api/v1/users/{UNKNOWN_USER_ID}", headers=self.token_headers)
        assert response.status_code == 404, f"answered {response.status_code}"
        media = response.headers.get("Content-Type", "").split(";")[0]
        assert media == PROBLEM_JSON, f"answered {media!r}, not {PROBLEM_JSON}"
        return f"404 {PROBLEM_JSON}"

    def _no_public_metrics(self) -> str:
        response = self.get("/metrics")
        assert response.status_code == 404, (
            f"/metrics answered {response.status_code} on the public address; "
            "it belongs on METRICS_PORT only")
        return "404"

    def _request_id(self) -> str:
        request_id = f"smoke-{int(time.time())}"
        response = self.get("/livez", headers={"X-Request-ID": request_id})
        assert response.headers.get("X-Request-ID") == request_id, "X-Request-ID was not echoed"
        return request_id


def smoke(url: str, expect_commit: str | None = None, wait: float = 180.0,
          credentials: tuple[str, str] | None = None) -> SmokeReport:
    """Smoke test the service at ``url`` and return the report; log in with ``credentials``, or
    those of LOOKOUT_SMOKE_EMAIL and LOOKOUT_SMOKE_PASSWORD."""
    return Smoke(url, credentials=credentials or credentials_from(os.environ)).run(expect_commit, wait)


def publish(report: SmokeReport) -> None:
    """Print the report and append it to the GitHub job summary when there is one."""
    print(report.text(), flush=True)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a") as out:
            out.write(report.markdown() + "\n")


def _local(expect_commit: str | None) -> SmokeReport:
    """Start the service as ``make loadtest`` does (gunicorn, migrated, production settings)."""
    from loadtests.harness import LocalService

    workdir = Path("reports") / "smoke"
    environ = {**os.environ, "GUNICORN_WORKERS": os.environ.get("GUNICORN_WORKERS", "1")}
    service = LocalService(workdir, environ, metrics_port=True)  # as in the image: /metrics off the API port
    if os.environ.get("GIT_COMMIT"):
        service.server.env["GIT_COMMIT"] = os.environ["GIT_COMMIT"]
    service.start()
    try:
        return smoke(service.url, expect_commit, wait=30,
                     credentials=(service.admin_email, service.admin_password))
    finally:
        service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("url", nargs="?", help="base URL or load balancer address of the service")
    target.add_argument("--local", action="store_true", help="start a local gunicorn and smoke test it")
    parser.add_argument("--expect-commit", default="",
                        help="fail unless / reports this commit (short or full SHA)")
    parser.add_argument("--wait", type=float, default=180.0, help="seconds to wait for /readyz (default 180)")
    args = parser.parse_args(argv)
    report = _local(args.expect_commit or None) if args.local else smoke(args.url, args.expect_commit or None,
                                                                         args.wait)
    publish(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
