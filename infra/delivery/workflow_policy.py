"""The house rules of .github/workflows, on top of what actionlint and the schema check.

Usage:
    python -m infra.delivery.workflow_policy [--root .]      # exit 1 and one line per problem

Rules (STYLE.md, "GitHub Actions"):
  - ``permissions: {}`` at the top; jobs widen it for themselves;
  - a ``concurrency`` group; every job has ``timeout-minutes``;
  - every action is pinned by a full commit SHA with its version in a comment (``# v6.0.2``);
    local actions (``./``) and ``docker://`` images by digest are the only exceptions;
  - ``actions/checkout`` runs with ``persist-credentials: false``;
  - every ``run:`` step is nothing but ``make`` calls, each target exists in the Makefile, and
    each is either run by .ci/run too or listed in the Makefile's RUNNER_ONLY (targets that need
    Docker, a cluster, a registry or the Pulumi CLI, whose scripts are tested with stand-ins);
  - ci.yml and pull-request.yml each end in one job that needs every other job (``if: always()``):
    pull-request.yml's "merge gate" is the check branch protection requires;
  - nothing deploys untested: a workflow with a job that runs ``make deploy`` runs only on a push
    to main (or by hand), and that job needs, directly or through other jobs, a job calling
    ci.yml and one calling loadtest.yml (so both passed on the same commit), with no ``if:`` on
    the way that runs on after a failure (``always()``, ``failure()``, ``cancelled()``); it runs
    ``make verify-image`` (the image's signature) before ``make deploy``;
  - the merge gate (pull-request.yml) runs on pull requests and calls ci.yml, loadtest.yml and
    e2e.yml, and every workflow another one calls declares ``workflow_call``.

actionlint and ``check-jsonschema --builtin-schema vendor.github-workflows`` are run next to this
by ``make workflow-lint``; they know GitHub's syntax, this knows the project's rules.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

USES_PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)\s*(?:#\s*(?P<version>\S+))?\s*$")
ACTION_AT_SHA = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^v?\d+(?:\.\d+){0,3}$")
MAKE_CALL = re.compile(r"(?:^|&&|\|\||;)\s*make\s+([^;&|)\n]+)")  # make in command position
REQUIRED_GATES = {"ci.yml", "pull-request.yml"}  # workflows whose last job must need all the others
DEPLOY_GATES = ("ci.yml", "loadtest.yml")  # what every deploy needs to have passed on its commit
MERGE_GATE = "pull-request.yml"
MERGE_GATE_CALLS = ("ci.yml", "loadtest.yml", "e2e.yml")
RUNS_AFTER_FAILURE = re.compile(r"\b(always|failure|cancelled)\(\)")


@dataclass(frozen=True)
class MakeInfo:
    targets: frozenset[str]
    runner_only: frozenset[str]
    ci_run: frozenset[str]


def make_info(root: Path) -> MakeInfo:
    """Ask make itself for the targets and RUNNER_ONLY; read the targets .ci/run calls."""
    database = subprocess.run(["make", "--print-data-base", "--question", "--no-builtin-rules",
                               "--no-builtin-variables", "-f", "Makefile", ":"],
                              cwd=root, capture_output=True, text=True, check=False).stdout
    targets: set[str] = set()
    runner_only: set[str] = set()
    for line in database.splitlines():
        if match := re.match(r"^([A-Za-z0-9][\w.-]*):(?!=)", line):
            targets.add(match.group(1))
        if match := re.match(r"^RUNNER_ONLY :?= (.*)$", line):
            runner_only.update(match.group(1).split())
    return MakeInfo(frozenset(targets), frozenset(runner_only), frozenset(called_targets(
        (root / ".ci" / "run").read_text())))


def called_targets(script: str) -> list[str]:
    """Return the targets of every ``make`` call in a shell script (variables like X=1 skipped)."""
    found = []
    for line in script.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for call in MAKE_CALL.findall(line.strip()):
            found += [w for w in shlex.split(call, comments=True) if "=" not in w and not w.startswith("-")]
    return found


def _lines(script: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", script)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def run_step_problems(script: str, make: MakeInfo) -> list[str]:
    """Problems of one ``run:`` script: anything but make, unknown targets, targets CI never runs."""
    problems = []
    for line in _lines(script):
        words = shlex.split(re.sub(r"\$\{\{.*?\}\}", "EXPRESSION", line))  # ${{ }} is one word
        if not words or words[0] != "make":
            problems.append(f"runs {line[:60]!r}: a step's work goes in a make target")
            continue
        names = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
        if not names:
            problems.append("calls make without a target")
        for name in names:
            if name not in make.targets:
                problems.append(f"calls make {name}, which the Makefile does not define")
            elif name not in make.ci_run and name not in make.runner_only:
                problems.append(f"calls make {name}, which .ci/run never runs and RUNNER_ONLY does not list")
    return problems


def uses_problems(text: str) -> list[str]:
    """Check every ``uses:`` line of the raw file (the version comment is gone once YAML is parsed)."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        match = USES_PINNED.match(line)
        if not match:
            continue
        ref, version = match.group("ref").strip("'\""), match.group("version")
        if ref.startswith("./") or re.match(r"^docker://\S+@sha256:[0-9a-f]{64}$", ref):
            continue
        if not ACTION_AT_SHA.match(ref):
            problems.append(f"line {number}: {ref} is not pinned by a full commit SHA")
        elif not version or not VERSION_COMMENT.match(version):
            problems.append(f"line {number}: {ref.split('@')[0]} needs its version in a comment (# v1.2.3)")
    return problems


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in job.get("steps") or [] if isinstance(s, dict)]


def workflow_problems(name: str, text: str, make: MakeInfo) -> list[str]:
    """Return every rule ``text`` (a workflow file called ``name``) breaks, prefixed with where."""
    doc = yaml.safe_load(text) or {}
    problems = [f"{name}: {p}" for p in uses_problems(text)]
    if doc.get("permissions") != {}:
        problems.append(f"{name}: the top level needs 'permissions: {{}}' (jobs widen it for themselves)")
    concurrency = doc.get("concurrency")
    if not (concurrency.get("group") if isinstance(concurrency, dict) else concurrency):
        problems.append(f"{name}: needs a concurrency group")
    jobs: dict[str, Any] = doc.get("jobs") or {}
    for job_id, job in jobs.items():
        where = f"{name}: job {job_id}"
        if "uses" in job:  # a reusable workflow call: its own file is checked
            continue
        if "timeout-minutes" not in job:
            problems.append(f"{where}: needs timeout-minutes")
        for index, step in enumerate(_steps(job), 1):
            label = f"{where}, step {step.get('name') or index}"
            uses = str(step.get("uses", ""))
            persist = (step.get("with") or {}).get("persist-credentials")
            if uses.startswith("actions/checkout@") and persist is not False:
                problems.append(f"{label}: checkout needs persist-credentials: false")
            if "run" in step:
                problems += [f"{label}: {p}" for p in run_step_problems(str(step["run"]), make)]
    if name in REQUIRED_GATES and jobs:
        last_id, last = list(jobs.items())[-1]
        needs = last.get("needs") or []
        needs = [needs] if isinstance(needs, str) else needs
        missing = sorted(set(jobs) - {last_id} - set(needs))
        if missing:
            problems.append(f"{name}: the last job ({last_id}) is the required check and must need {missing}")
        if "always()" not in str(last.get("if", "")):
            problems.append(f"{name}: the last job ({last_id}) needs 'if: always()', "
                            "or a failure would skip it")
    return problems


def _runs(job: dict[str, Any]) -> list[str]:
    return [line for step in _steps(job) if "run" in step for line in _lines(str(step["run"]))]


def _needs(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


def _ancestors(jobs: dict[str, Any], job_id: str) -> set[str]:
    """Every job ``job_id`` waits for, directly or through other jobs."""
    seen: set[str] = set()
    todo = _needs(jobs.get(job_id) or {})
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += _needs(jobs.get(current) or {})
    return seen


def _calls(job: dict[str, Any]) -> str | None:
    """The workflow file a job calls (``uses: ./.github/workflows/x.yml``), if it calls one."""
    uses = str(job.get("uses", ""))
    return uses.removeprefix("./.github/workflows/") if uses.startswith("./.github/workflows/") else None


def gating_problems(name: str, doc: dict[str, Any]) -> list[str]:
    """A workflow that deploys deploys only what passed CI and the load-test gate on the same commit."""
    jobs: dict[str, Any] = doc.get("jobs") or {}
    deploying = [job_id for job_id, job in jobs.items() if any(
        re.match(r"make\b.*\bdeploy\b", line) for line in _runs(job))]
    if not deploying:
        return []
    problems = []
    on = doc.get("on", doc.get(True)) or {}
    triggers = {on} if isinstance(on, str) else set(on)
    if triggers - {"push", "workflow_dispatch"}:
        problems.append(f"{name}: deploys, so it runs on a push to main (or by hand) only, not on "
                        f"{sorted(triggers - {'push', 'workflow_dispatch'})}")
    push = (on.get("push") or {}) if isinstance(on, dict) else {}
    if "push" in triggers and push.get("branches") != ["main"]:
        problems.append(f"{name}: deploys, so its push trigger is main alone")
    for job_id in deploying:
        chain = _ancestors(jobs, job_id)
        for gate in DEPLOY_GATES:
            if not any(_calls(jobs.get(a) or {}) == gate for a in chain):
                problems.append(f"{name}: job {job_id} deploys without needing a job that calls {gate} "
                                "on the same commit")
        for other in sorted(chain | {job_id}):
            if RUNS_AFTER_FAILURE.search(str((jobs.get(other) or {}).get("if", ""))):
                problems.append(f"{name}: job {other} is on the way to a deploy and runs after a failure "
                                f"({(jobs.get(other) or {})['if']})")
        lines = _runs(jobs[job_id])
        deploy = next(i for i, line in enumerate(lines) if re.match(r"make\b.*\bdeploy\b", line))
        if not any(re.match(r"make\b.*\bverify-image\b", line) for line in lines[:deploy]):
            problems.append(f"{name}: job {job_id} deploys without make verify-image first (the signature)")
    return problems


def merge_gate_problems(docs: dict[str, dict[str, Any]]) -> list[str]:
    """The merge gate runs on pull requests and calls what a merge needs; called workflows are callable."""
    problems = []
    gate = docs.get(MERGE_GATE)
    if gate is None:
        problems.append(f"{MERGE_GATE}: missing; it is the merge gate branch protection requires")
    else:
        on = gate.get("on", gate.get(True)) or {}
        if "pull_request" not in ({on} if isinstance(on, str) else set(on)):
            problems.append(f"{MERGE_GATE}: the merge gate must run on pull_request")
        called = {_calls(job) for job in (gate.get("jobs") or {}).values()}
        problems += [f"{MERGE_GATE}: the merge gate does not call {w}" for w in MERGE_GATE_CALLS
                     if w not in called]
        last = list((gate.get("jobs") or {}).values())[-1:] or [{}]
        if "make ci-verdict" not in _runs(last[0]):
            problems.append(f"{MERGE_GATE}: the last job must run make ci-verdict "
                            "(skipped passes, failed fails)")
    for name, doc in docs.items():
        for job_id, job in (doc.get("jobs") or {}).items():
            target = _calls(job)
            if target is None:
                continue
            target_on = (docs.get(target) or {}).get("on", (docs.get(target) or {}).get(True)) or {}
            if "workflow_call" not in ({target_on} if isinstance(target_on, str) else set(target_on)):
                problems.append(f"{name}: job {job_id} calls {target}, which does not declare workflow_call")
    return problems


def check(root: Path) -> list[str]:
    """Check every workflow under ``root``/.github/workflows; no workflow at all is a problem too."""
    files = sorted((root / ".github" / "workflows").glob("*.y*ml"))
    if not files:
        return [f"no workflow files under {root / '.github' / 'workflows'}"]
    make = make_info(root)
    problems: list[str] = []
    docs = {}
    for path in files:
        problems += workflow_problems(path.name, path.read_text(), make)
        docs[path.name] = yaml.safe_load(path.read_text()) or {}
        problems += gating_problems(path.name, docs[path.name])
    return problems + merge_gate_problems(docs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root")
    args = parser.parse_args(argv)
    problems = check(args.root)
    for problem in problems:
        print(f"workflow policy: {problem}")
    print(f"workflow policy: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
