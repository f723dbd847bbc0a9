"""The Pulumi CLI calls the pipeline makes, in one place.

Usage:
    stack = PulumiStack("staging")
    stack.select()
    stack.set_config("image", "ghcr.io/lookout/lookout@sha256:...")
    stack.up()
    stack.outputs()["loadBalancerAddress"]

The program runs in infra/ (``Pulumi.yaml``). Secrets are handed over on stdin, never on the
command line, where other processes could read them. The Automation API would do the same with
more machinery; it drives this same CLI underneath, so the stand-in CLI of the tests covers both.

Environment variables read: PULUMI (the CLI to run, default ``pulumi``), and Pulumi's own
(PULUMI_BACKEND_URL, PULUMI_ACCESS_TOKEN, PULUMI_CONFIG_PASSPHRASE, ...), passed through.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INFRA_DIR = Path(__file__).resolve().parents[1]


class PulumiError(RuntimeError):
    """A Pulumi command failed; the message carries the command and the end of its output."""


class PulumiStack:
    def __init__(self, stack: str, cwd: Path = INFRA_DIR, binary: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.stack = stack
        self.cwd = cwd
        self.binary = binary or os.environ.get("PULUMI", "pulumi")
        self.env = dict(os.environ if env is None else env)

    def run(self, *args: str, stdin: str | None = None, stream: bool = False) -> str:
        """Run ``pulumi ARGS --stack STACK --non-interactive`` in infra/ and return its stdout."""
        flags = ["--stack", self.stack, "--non-interactive"]
        split = args.index("--") if "--" in args else len(args)  # flags go before a literal "--"
        command = [self.binary, *args[:split], *flags, *args[split:]]
        done = subprocess.run(command, cwd=self.cwd, env=self.env, input=stdin, text=True, check=False,
                              stdout=None if stream else subprocess.PIPE,
                              stderr=None if stream else subprocess.PIPE)
        if done.returncode != 0:
            shown = " ".join(args[:3])
            tail = "" if stream else (done.stderr or done.stdout or "")[-3000:]
            raise PulumiError(f"pulumi {shown} failed with exit code {done.returncode}\n{tail}".rstrip())
        return done.stdout or ""

    def select(self, create: bool = False) -> None:
        args = ["stack", "select", *(["--create"] if create else [])]
        command = [self.binary, *args, self.stack, "--non-interactive"]
        done = subprocess.run(command, cwd=self.cwd, env=self.env, text=True, capture_output=True,
                              check=False)
        if done.returncode != 0:
            raise PulumiError(f"pulumi stack select {self.stack} failed:\n{done.stderr[-2000:]}")

    def set_config(self, key: str, value: str, secret: bool = False) -> None:
        """Set a config value; a secret goes in on stdin and stays encrypted in the stack."""
        if secret:
            self.run("config", "set", "--secret", key, stdin=value)
        else:
            self.run("config", "set", key, "--", value)

    def config(self, key: str) -> str | None:
        try:
            return self.run("config", "get", key).strip() or None
        except PulumiError:
            return None

    def outputs(self, show_secrets: bool = False) -> dict[str, Any]:
        """Return the stack outputs ({} before the first deploy)."""
        args = ["stack", "output", "--json", *(["--show-secrets"] if show_secrets else [])]
        text = self.run(*args).strip()
        return json.loads(text) if text else {}

    def up(self) -> None:
        """Deploy: no preview step, the whole log on the console (the CI job log)."""
        self.run("up", "--yes", "--skip-preview", "--diff", stream=True)

    def preview(self) -> str:
        """Return the preview's text (what a pull request would change)."""
        return self.run("preview", "--diff")
