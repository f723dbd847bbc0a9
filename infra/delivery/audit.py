"""Known vulnerabilities: pip-audit over every lock, and the one file of accepted exceptions.

Usage:
    python -m infra.delivery.audit          # (network) pip-audit each lock; exit 1 on a finding
    python -m infra.delivery.audit --trivyignore reports/trivyignore.yaml   # exceptions for Trivy (offline)

Every lock the project installs is exported with its hashes (``uv export --frozen``; uv's own pin
is already such a file) and audited by pip-audit with ``--disable-pip``: no resolver, exactly the
pinned files. A finding fails the audit when a fixed version exists and no exception covers it.
pip-audit's sources (PyPI, OSV) give no severity, so every fixable finding counts here, a stricter
bar than the image scan's: Trivy fails on fixable HIGH and CRITICAL findings in the image.

The exceptions live in ``infra/delivery/vulnerability-exceptions.yaml``, each with an id (CVE,
GHSA or PYSEC; any alias matches), the package, the reason and an expiry date. An expired or
incomplete exception fails both commands, so nothing is accepted for ever; Trivy gets the same
list (with ``expired_at``) through ``--trivyignore``.

Environment variables read: PIP_AUDIT (the pip-audit to run, default .venv's), UV (default .venv's),
GITHUB_STEP_SUMMARY.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXCEPTIONS = Path(__file__).resolve().parent / "vulnerability-exceptions.yaml"
ID = re.compile(r"^(CVE-\d{4}-\d{4,}|GHSA(-[23456789cfghjmpqrvwx]{4}){3}|PYSEC-\d{4}-\d+)$")
# (name, how to export it): the app with every extra and the build backend, checkov's venv, uv.
LOCKS: tuple[tuple[str, Sequence[str] | None, Path], ...] = (
    ("uv.lock", ("export", "--frozen", "--format", "requirements-txt", "--all-extras", "--group", "build",
                 "--no-emit-project"), ROOT),
    (".ci/checkov/uv.lock", ("export", "--frozen", "--format", "requirements-txt", "--no-emit-project",
                             "--project", ".ci/checkov"), ROOT),
    (".ci/bootstrap/requirements.txt", None, ROOT / ".ci" / "bootstrap" / "requirements.txt"),
)


class ExceptionsError(ValueError):
    """The exceptions file is malformed, or holds an exception past its date."""


@dataclass(frozen=True)
class Accepted:
    id: str
    package: str
    reason: str
    expires: dt.date


@dataclass(frozen=True)
class Finding:
    lock: str
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]

    @property
    def ids(self) -> set[str]:
        return {self.id, *self.aliases}


def load_exceptions(path: Path = EXCEPTIONS, today: dt.date | None = None) -> list[Accepted]:
    """Read and check the exceptions; raise ExceptionsError naming every problem (expired ones too)."""
    today = today or dt.date.today()
    raw = yaml.safe_load(path.read_text()) or {}
    entries = raw.get("exceptions")
    if not isinstance(entries, list):
        raise ExceptionsError(f"{path.name}: needs a list under 'exceptions' (empty is fine)")
    accepted, problems = [], []
    for number, entry in enumerate(entries, 1):
        name = entry.get("id", "?") if isinstance(entry, dict) else "?"
        where = f"{path.name}: exception {number} ({name})"
        if not isinstance(entry, dict) or set(entry) != {"id", "package", "reason", "expires"}:
            problems.append(f"{where}: needs exactly id, package, reason and expires")
            continue
        expires = entry["expires"]
        if not ID.match(str(entry["id"])):
            problems.append(f"{where}: id is not a CVE, GHSA or PYSEC identifier")
        if len(str(entry["reason"]).strip()) < 20:
            problems.append(f"{where}: the reason must say why it is accepted")
        if not isinstance(expires, dt.date):
            problems.append(f"{where}: expires must be a date (YYYY-MM-DD)")
        elif expires < today:
            problems.append(f"{where}: expired on {expires}; fix it, or renew the exception with a reason")
        else:
            accepted.append(Accepted(str(entry["id"]), str(entry["package"]), str(entry["reason"]).strip(),
                                     expires))
    if problems:
        raise ExceptionsError("\n".join(problems))
    return accepted


def findings(lock: str, report: Mapping[str, Any]) -> list[Finding]:
    """Every vulnerability in a pip-audit JSON report."""
    return [Finding(lock, dep["name"], dep.get("version", ""), vuln["id"], tuple(vuln.get("aliases") or ()),
                    tuple(vuln.get("fix_versions") or ()))
            for dep in report.get("dependencies", []) for vuln in dep.get("vulns") or []]


def verdict(found: Sequence[Finding], accepted: Sequence[Accepted]) -> tuple[list[Finding], list[str]]:
    """Return the findings that fail the audit, and notes on the rest (unfixable, or accepted)."""
    failing, notes = [], []
    for finding in found:
        exception = next((a for a in accepted if a.id in finding.ids
                          and a.package.lower() == finding.package.lower()), None)
        what = f"{finding.package} {finding.version} ({finding.lock}): {finding.id}"
        if exception:
            notes.append(f"{what} accepted until {exception.expires}: {exception.reason}")
        elif not finding.fix_versions:
            notes.append(f"{what} has no fixed version yet")
        else:
            failing.append(finding)
    return failing, notes


def trivy_ignore(accepted: Sequence[Accepted]) -> dict[str, Any]:
    """The exceptions as Trivy's YAML ignore file (Trivy drops an entry after its expired_at)."""
    return {"vulnerabilities": [{"id": a.id, "statement": a.reason, "expired_at": a.expires.isoformat()}
                                for a in accepted]}


def _tool(name: str, variable: str) -> str:
    return os.environ.get(variable) or str(ROOT / ".venv" / "bin" / name)


def audit_lock(name: str, export: Sequence[str] | None, source: Path, folder: Path) -> dict[str, Any]:
    """Run pip-audit on one lock (exported with hashes first) and return its JSON report."""
    requirements = source
    if export is not None:
        requirements = folder / (name.replace("/", "_") + ".txt")
        done = subprocess.run([_tool("uv", "UV"), *export, "--output-file", str(requirements)], cwd=source,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"audit: exporting {name} failed:\n{done.stderr[-2000:]}")
    report = folder / (name.replace("/", "_") + ".json")
    command = [_tool("pip-audit", "PIP_AUDIT"), "--requirement", str(requirements), "--disable-pip",
               "--require-hashes", "--format", "json", "--output", str(report), "--progress-spinner", "off"]
    print("+ " + " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if not report.exists():  # exit 1 with a report means findings; without one, pip-audit itself failed
        raise SystemExit(f"audit: pip-audit could not audit {name} ({done.returncode}):\n"
                         f"{done.stderr[-2000:]}")
    return dict(json.loads(report.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exceptions", type=Path, default=EXCEPTIONS)
    parser.add_argument("--trivyignore", type=Path, help="write the exceptions for Trivy here and stop")
    args = parser.parse_args(argv)
    try:
        accepted = load_exceptions(args.exceptions)
    except ExceptionsError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 1
    if args.trivyignore:
        args.trivyignore.parent.mkdir(parents=True, exist_ok=True)
        args.trivyignore.write_text(yaml.safe_dump(trivy_ignore(accepted), sort_keys=False))
        print(f"audit: {len(accepted)} exceptions written to {args.trivyignore}")
        return 0
    found: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="audit-") as folder:
        for name, export, source in LOCKS:
            report = audit_lock(name, export, source, Path(folder))
            found += findings(name, report)
            print(f"audit: {name}: {len(report.get('dependencies', []))} packages audited", flush=True)
    failing, notes = verdict(found, accepted)
    lines = [f"audit: FAIL {f.package} {f.version} ({f.lock}): {f.id}, fixed in {', '.join(f.fix_versions)}"
             for f in failing] + [f"audit: note {n}" for n in notes]
    for line in lines:
        print(line)
    print(f"audit: {len(found)} findings, {len(failing)} failing")
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with Path(summary).open("a") as out:
            out.write(f"### Dependency audit: {len(failing)} failing of {len(found)} findings\n\n"
                      + "".join(f"- {line.removeprefix('audit: ')}\n" for line in lines) + "\n")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
