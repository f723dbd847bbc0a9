"""Nothing deploys untested, nothing merges unchecked: the policy refuses each way around the gates,
and the merge gate's path filter runs on a real git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from infra.delivery import changes
from infra.delivery.workflow_policy import gating_problems, merge_gate_problems
from loadtests.harness import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"


def doc(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def docs() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in WORKFLOWS.glob("*.yml")}


def deploy_with(edit: tuple[str, str]) -> list[str]:
    text = (WORKFLOWS / "deploy.yml").read_text()
    assert edit[0] in text, edit[0]
    return gating_problems("deploy.yml", yaml.safe_load(text.replace(*edit, 1)))


def test_the_repo_deploy_is_gated():
    assert gating_problems("deploy.yml", doc("deploy.yml")) == []
    assert merge_gate_problems(docs()) == []


# The deploy.yml the repository used to have: on every push, beside CI, waiting for nothing.
UNGATED = """
name: deploy
on:
  push:
    branches: [main]
jobs:
  image:
    runs-on: ubuntu-24.04
    steps:
      - run: make image
  staging:
    needs: image
    runs-on: ubuntu-24.04
    steps:
      - run: make deploy
"""


def test_an_ungated_deploy_workflow_is_refused():
    found = gating_problems("deploy.yml", yaml.safe_load(UNGATED))
    assert any("deploys without needing a job that calls ci.yml" in p for p in found)
    assert any("deploys without needing a job that calls loadtest.yml" in p for p in found)
    assert any("without make verify-image first" in p for p in found)


@pytest.mark.parametrize("edit, problem", [
    (("    needs: [ci, loadtest]\n", "    needs: [ci]\n"), "without needing a job that calls loadtest.yml"),
    (("    needs: [ci, loadtest]\n", "    needs: [loadtest]\n"), "without needing a job that calls ci.yml"),
    (("    uses: ./.github/workflows/ci.yml\n", "    uses: ./.github/workflows/e2e.yml\n"),
     "calls ci.yml"),
    (("    needs: [ci, loadtest]\n", "    needs: [ci, loadtest]\n    if: always()\n"),
     "runs after a failure"),
    (("    needs: image\n", "    needs: image\n    if: ${{ !cancelled() }}\n"), "runs after a failure"),
    (("  push:\n    branches: [main]\n", "  push:\n    branches: [main]\n  pull_request:\n"),
     "not on ['pull_request']"),
    (("  push:\n    branches: [main]\n", "  workflow_run:\n    workflows: [ci]\n"),
     "not on ['workflow_run']"),
    (("    branches: [main]\n", "    branches: [main, 'release/*']\n"), "main alone"),
    (("        run: make verify-image\n", "        run: make build-info\n"), "without make verify-image"),
])
def test_each_way_around_the_deploy_gate_is_refused(edit: tuple[str, str], problem: str):
    found = deploy_with(edit)
    assert any(problem in p for p in found), found


@pytest.mark.parametrize("name, edit, problem", [
    ("pull-request.yml",
     ("    uses: ./.github/workflows/e2e.yml\n", "    uses: ./.github/workflows/ci.yml\n"),
     "does not call e2e.yml"),
    ("pull-request.yml", ("on:\n  pull_request:\n", "on:\n  push:\n"), "must run on pull_request"),
    ("pull-request.yml", ("        run: make ci-verdict\n", "        run: make build-info\n"),
     "make ci-verdict"),
    ("e2e.yml", ("  workflow_call:\n", ""), "calls e2e.yml, which does not declare workflow_call"),
])
def test_each_way_around_the_merge_gate_is_refused(name: str, edit: tuple[str, str], problem: str):
    all_docs = docs()
    text = (WORKFLOWS / name).read_text()
    assert edit[0] in text
    all_docs[name] = yaml.safe_load(text.replace(*edit, 1))
    found = merge_gate_problems(all_docs)
    assert any(problem in p for p in found), found


def test_without_the_merge_gate_file_the_policy_says_so():
    all_docs = docs()
    del all_docs["pull-request.yml"]
    assert any("pull-request.yml: missing" in p for p in merge_gate_problems(all_docs))


# --- the path filter --------------------------------------------------------------------------------

@pytest.mark.parametrize("path, counts", [
    ("app/api/users.py", True), ("infra/components/rollouts.py", True), ("dashboards/slo.yaml", True),
    ("loadtests/locustfile.py", True), ("Makefile", True), ("uv.lock", True), ("Dockerfile", True),
    (".github/workflows/e2e.yml", True), (".ci/bootstrap/requirements.txt", True),
    ("README.md", False), ("tests/test_users_api.py", False), (".github/dependabot.yml", False),
    ("apps/x.py", False), ("docs/infra/x.md", False),
])
def test_the_filter_knows_what_gets_deployed(path: str, counts: bool):
    assert bool(changes.deployable([path])) is counts


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
                               "PATH": "/usr/bin:/bin"}).stdout.strip()


def commit(repo: Path, path: str, text: str) -> str:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "add", path)
    git(repo, "commit", "-q", "-m", f"change {path}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    commit(tmp_path, "README.md", "one\n")
    return tmp_path


def run_changes(repo: Path, base: str, head: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    output = tmp_path / "github-output"
    output.write_text("")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("BASE_SHA", base)
    monkeypatch.setenv("HEAD_SHA", head)
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    assert changes.main() == 0
    return output.read_text()


def test_a_docs_only_pull_request_skips_the_load_test_and_e2e(repo: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "docs")
    head = commit(repo, "README.md", "two\n")
    assert run_changes(repo, base, head, tmp_path, monkeypatch) == "deployable=false\n"


def test_a_change_to_the_app_runs_them_even_when_main_moved_on(repo: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    head = commit(repo, "app/x.py", "x = 1\n")
    git(repo, "checkout", "-q", "main")
    moved = commit(repo, "loadtests/y.py", "y = 1\n")  # main's own change is not the pull request's
    assert run_changes(repo, base, head, tmp_path, monkeypatch) == "deployable=true\n"
    git(repo, "checkout", "-q", "-b", "docs2", moved)
    docs_head = commit(repo, "NOTES.md", "n\n")
    assert run_changes(repo, moved, docs_head, tmp_path, monkeypatch) == "deployable=false\n"


def test_a_base_that_was_not_fetched_fails_with_a_reason(repo: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("BASE_SHA", "0" * 40)
    with pytest.raises(SystemExit, match="fetch-depth: 0"):
        changes.main()
    monkeypatch.setenv("BASE_SHA", "")
    assert changes.main() == 2
