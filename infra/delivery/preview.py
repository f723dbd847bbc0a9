"""Write what ``pulumi preview`` would change in a stack as Markdown, for a pull request comment.

Usage:
    python -m infra.delivery.preview --stack staging [--out reports/preview-staging.md]

The preview's exit code is kept (a program that does not run fails the job); the comment is
written either way, so the pull request shows why. GitHub cuts comments at 65,536 characters:
longer previews keep their head and tail and point at the job log for the rest.

Environment variables read: KUBECONFIG_DATA (see rollout.py), GITHUB_SHA, and the Pulumi CLI's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from infra.delivery.pulumi_cli import PulumiError, PulumiStack
from infra.delivery.rollout import kubeconfig

LIMIT = 60_000  # below GitHub's 65,536, leaving room for the heading


def comment(stack: str, text: str, ok: bool, commit: str = "") -> str:
    """Return the Markdown comment for a preview's output."""
    if len(text) > LIMIT:
        half = LIMIT // 2
        cut = len(text) - LIMIT
        text = f"{text[:half]}\n... {cut} characters left out: see the job log ...\n{text[-half:]}"
    verdict = "would change" if ok else "failed"
    head = f"### `pulumi preview` of **{stack}** {verdict}" + (f" (at {commit[:12]})" if commit else "")
    return f"{head}\n\n<details open><summary>output</summary>\n\n```\n{text.strip()}\n```\n\n</details>\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or Path("reports") / f"preview-{args.stack}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    with kubeconfig(dict(os.environ)) as env:
        stack = PulumiStack(args.stack, env=env)
        try:
            stack.select()
            text, ok = stack.preview(), True
        except PulumiError as exc:
            text, ok = str(exc), False
    out.write_text(comment(args.stack, text, ok, os.environ.get("GITHUB_SHA", "")))
    print(out.read_text())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
