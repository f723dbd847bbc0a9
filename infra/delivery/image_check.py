"""Run the image the way Kubernetes runs it and check what the pods rely on.

Usage (needs Docker and a PostgreSQL the container can reach, e.g. a CI service container):
    python -m infra.delivery.image_check lookout:ci --database-url postgresql://postgres@127.0.0.1:5432/postgres

The container runs with a read-only root filesystem, only /tmp writable, as UID 10001, every
capability dropped, on the host network. Checks: the labels carry version and commit; the image
runs as 10001 by default; the migration command (the Job's) works; gunicorn is PID 1; the smoke
test passes on :8000 and /metrics answers on :9100 only; SIGTERM stops it cleanly within the
graceful timeout; no compiler and none of Pulumi, Locust or pytest are inside.

Environment variables read: GIT_COMMIT (the commit the labels and / must report).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from typing import Any

import requests

from infra.delivery.smoke import publish, smoke
from loadtests.harness import PRODUCTION_SECRETS

NAME = "lookout-image-check"
UID = "10001"
HARDENING = ["--read-only", "--tmpfs", "/tmp:rw,size=64m",  # noqa: S108 - the container's own tmpfs
             "--user", f"{UID}:{UID}", "--cap-drop", "ALL",
             "--security-opt", "no-new-privileges", "--network", "host"]
ADMIN_EMAIL = "image-check-admin@example.com"
GRACEFUL_SECONDS = 20  # GUNICORN_GRACEFUL_TIMEOUT's default


def docker(*args: str, check: bool = True,
           environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run docker; ``environ`` adds variables that ``--env NAME`` passes on without a value in argv."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **environ} if environ else None)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-1500:]}")
    return done


def label_problems(inspect: dict[str, Any], commit: str) -> list[str]:
    """Problems with the image's config (from ``docker image inspect``)."""
    config = inspect.get("Config") or {}
    labels = config.get("Labels") or {}
    problems = []
    if not labels.get("org.opencontainers.image.version"):
        problems.append("no org.opencontainers.image.version label")
    revision = labels.get("org.opencontainers.image.revision", "")
    if not revision or (commit and not commit.startswith(revision) and not revision.startswith(commit)):
        problems.append(f"org.opencontainers.image.revision is {revision!r}, not the commit {commit!r}")
    if config.get("User") != f"{UID}:{UID}":
        problems.append(f"the image runs as {config.get('User')!r}, not {UID}:{UID}")
    if config.get("Cmd", [])[:1] != ["gunicorn"] or config.get("Entrypoint"):
        problems.append(f"the command is {config.get('Entrypoint')} {config.get('Cmd')}, "
                        "not gunicorn in exec form")
    return problems


def pid1_problems(cmdline: str) -> list[str]:
    """Problems with /proc/1/cmdline of the running container (NUL-separated)."""
    argv = [a for a in cmdline.split("\0") if a]
    if not argv or not any(a.endswith("gunicorn") for a in argv[:2]):
        return [f"PID 1 is {' '.join(argv) or '?'}, not gunicorn: SIGTERM would not reach it"]
    return []


def run_checks(image: str, database_url: str, commit: str) -> list[str]:
    env = ["--env", "SECRET_KEY=" + "image-check-secret-" + "x" * 24,
           "--env", "JWT_PRIVATE_KEY=" + PRODUCTION_SECRETS["JWT_PRIVATE_KEY"],
           "--env", "JWT_KEY_ID=image-check",
           "--env", f"DATABASE_URL={database_url}"]
    problems = label_problems(json.loads(docker("image", "inspect", image).stdout)[0], commit)
    migrate = docker("run", "--rm", *HARDENING, *env, image, "flask", "--app", "app", "db", "upgrade",
                     check=False)
    if migrate.returncode != 0:
        return [*problems, f"the migration command failed: {migrate.stderr[-1500:]}"]
    # The migration Job's second step; the smoke test logs in as this admin. `--env NAME` takes the
    # value from this process's environment, so the password is on no command line.
    admin = (ADMIN_EMAIL, secrets.token_urlsafe(24))
    bootstrap = docker("run", "--rm", *HARDENING, *env, "--env", "LOOKOUT_BOOTSTRAP_ADMIN_EMAIL",
                       "--env", "LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD", image, "flask", "--app", "app", "users",
                       "bootstrap-admin", check=False,
                       environ={"LOOKOUT_BOOTSTRAP_ADMIN_EMAIL": admin[0],
                                "LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD": admin[1]})
    if bootstrap.returncode != 0:
        return [*problems, f"the bootstrap admin command failed: {bootstrap.stderr[-1500:]}"]
    absent = docker("run", "--rm", *HARDENING, "--entrypoint", "python", image, "-c",
                    "import importlib.util, shutil, sys; "
                    "found = [m for m in ('pulumi', 'locust', 'pytest') if importlib.util.find_spec(m)]; "
                    "found += [c for c in ('gcc', 'cc', 'make') if shutil.which(c)]; "
                    "print(' '.join(found)); sys.exit(1 if found else 0)", check=False)
    if absent.returncode != 0:
        problems.append(f"the image carries what it should not: {absent.stdout.strip()}")
    docker("rm", "--force", NAME, check=False)
    docker("run", "--detach", "--name", NAME, *HARDENING, *env, image)
    try:
        report = smoke("http://127.0.0.1:8000", commit or None, wait=60, credentials=admin)
        publish(report)
        problems += [f"smoke: {c.name}: {c.detail}" for c in report.checks if not c.ok]
        metrics = requests.get("http://127.0.0.1:9100/metrics", timeout=5)
        if metrics.status_code != 200 or "lookout_build_info" not in metrics.text:
            problems.append(f"/metrics on :9100 answered {metrics.status_code} without lookout_build_info")
        problems += pid1_problems(docker("exec", NAME, "cat", "/proc/1/cmdline").stdout)
        uid = docker("exec", NAME, "id", "-u").stdout.strip()
        if uid != UID:
            problems.append(f"the process runs as UID {uid}, not {UID}")
        started = time.monotonic()
        docker("stop", "--time", str(GRACEFUL_SECONDS + 10), NAME)
        took = time.monotonic() - started
        code = docker("inspect", "--format", "{{.State.ExitCode}}", NAME).stdout.strip()
        if took > GRACEFUL_SECONDS or code != "0":
            problems.append(f"SIGTERM: exit code {code} after {took:.1f}s (a clean stop exits 0 within "
                            f"{GRACEFUL_SECONDS}s)")
    finally:
        logs = docker("logs", "--tail", "50", NAME, check=False)
        if problems:
            print(logs.stdout + logs.stderr, file=sys.stderr)
        docker("rm", "--force", NAME, check=False)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--database-url", required=True,
                        help="PostgreSQL the container reaches (host network)")
    args = parser.parse_args(argv)
    problems = run_checks(args.image, args.database_url, os.environ.get("GIT_COMMIT", ""))
    for problem in problems:
        print(f"image check: FAIL {problem}")
    print(f"image check: {args.image}: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
