"""Whether a pull request touches what gets deployed: the path filter of the merge gate.

Usage (make changes; the first job of .github/workflows/pull-request.yml):
    BASE_SHA=... HEAD_SHA=... python -m infra.delivery.changes

Prints the changed files that count and writes ``deployable=true|false`` to GITHUB_OUTPUT. The
load-test gate and the kind e2e run when it is true; the merge gate's verdict counts them as
passed when this filter skipped them, and as failed when they failed or were cancelled. The
filter lives here, not in the workflows' ``paths:``: a workflow a path filter never started
reports no check at all, which branch protection would wait on forever.

Environment variables read: BASE_SHA, HEAD_SHA (default HEAD), GITHUB_OUTPUT.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

# What the image, the stack, the load test and the e2e run are made of, and the files that run them.
DEPLOYABLE = (
    "app/**", "infra/**", "dashboards/**", "loadtests/**",
    "Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", ".ci/bootstrap/**", ".ci/faulty/**",
    "Makefile",
    ".github/workflows/pull-request.yml", ".github/workflows/loadtest.yml", ".github/workflows/e2e.yml",
)


def matches(path: str, pattern: str) -> bool:
    """A ``dir/**`` pattern takes everything below ``dir``; any other pattern is an fnmatch glob."""
    if pattern.endswith("/**"):
        return path.startswith(pattern[:-2])
    return fnmatch.fnmatchcase(path, pattern)


def deployable(paths: Iterable[str], patterns: Iterable[str] = DEPLOYABLE) -> list[str]:
    """Return the paths that touch what gets deployed."""
    patterns = tuple(patterns)
    return [p for p in paths if any(matches(p, pattern) for pattern in patterns)]


def changed_files(base: str, head: str = "HEAD", cwd: Path | None = None) -> list[str]:
    """Files that differ between the merge base of ``base`` and ``head``, and ``head``."""
    done = subprocess.run(["git", "diff", "--name-only", "--no-renames", f"{base}...{head}"], cwd=cwd,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"changes: git diff {base}...{head} failed (is the base fetched? checkout "
                         f"needs fetch-depth: 0):\n{done.stderr.strip()}")
    return [line for line in done.stdout.splitlines() if line]


def main() -> int:
    base = os.environ.get("BASE_SHA", "")
    if not base:
        print("changes: BASE_SHA is not set (the pull request's base commit)", file=sys.stderr)
        return 2
    found = deployable(changed_files(base, os.environ.get("HEAD_SHA") or "HEAD"))
    for path in found:
        print(f"changes: {path}")
    print(f"changes: deployable={'true' if found else 'false'} ({len(found)} files)")
    if output := os.environ.get("GITHUB_OUTPUT"):
        with Path(output).open("a") as out:
            out.write(f"deployable={'true' if found else 'false'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
