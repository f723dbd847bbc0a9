"""The verdict of a workflow's required check: every job it needs succeeded (or was skipped on purpose).

Usage (the last job of ci.yml, with ``if: always()``):
    NEEDS_JSON='${{ toJSON(needs) }}' python -m infra.delivery.verdict

Branch protection requires this one check instead of every job by name, so adding a job cannot
silently drop it from the requirement. A job that failed or was cancelled fails the verdict; a
job skipped by its own ``if:`` passes (re-run the workflow to run it).

Environment variables read: NEEDS_JSON (the ``needs`` context as JSON).
"""

from __future__ import annotations

import json
import os
import sys

PASSING = {"success", "skipped"}


def failures(needs: dict[str, dict[str, object]]) -> list[str]:
    """Return ``job: result`` for every needed job that did not pass."""
    if not needs:
        return ["no jobs were given: the verdict needs the needs context"]
    return [f"{job}: {info.get('result')}" for job, info in sorted(needs.items())
            if info.get("result") not in PASSING]


def main() -> int:
    try:
        needs = json.loads(os.environ.get("NEEDS_JSON") or "{}")
    except json.JSONDecodeError as exc:
        print(f"verdict: NEEDS_JSON is not JSON: {exc}", file=sys.stderr)
        return 1
    failed = failures(needs)
    for line in failed:
        print(f"verdict: FAIL {line}")
    print(f"verdict: {len(needs) - len(failed)} of {len(needs)} jobs passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
