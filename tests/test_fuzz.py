"""schemathesis against the live /openapi.json of a real gunicorn, every check on, a few hundred
examples per operation, valid and invalid, as an admin so that every operation is reached:
no 5xx and no response the spec does not allow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_shutdown import CHEAP, login

from app.models import Role
from loadtests.harness import GunicornServer

pytestmark = pytest.mark.slow
EXAMPLES = 300


@pytest.fixture
def database_url(request):
    """PostgreSQL (production's database) when there is one, SQLite otherwise."""
    from conftest import _migrated_url

    return _migrated_url(request, "postgresql" if os.environ.get("TEST_DATABASE_URL") else "sqlite")


def test_schemathesis_finds_no_server_error_and_no_spec_violation(app, make_user, tmp_path):
    make_user(Role.ADMIN, email="admin@example.com")
    env = {
        "DATABASE_URL": app.config["DATABASE_URL"],
        **CHEAP,
        "RATE_LIMIT_LOGIN": "100000 per minute",
        "LOG_LEVEL": "ERROR",
    }
    with GunicornServer(env, workers=1, threads=4) as server:
        token = login(server.url, "admin@example.com")
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                "--mode",
                "all",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "8",
                "--header",
                f"Authorization: Bearer {token}",
                "--request-timeout",
                "10",
                "--generation-database",
                "none",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        server_log = server.output()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "0 generated" not in run.stdout
    assert "Traceback" not in server_log, server_log[-4000:]
