"""schemathesis against the live /openapi.json of a real gunicorn, every check on, a few hundred
examples per operation, valid and invalid, once as an admin (every operation is reached) and once
as a regular user: no 5xx (none answered, none counted in /metrics), no response the spec does
not allow, and the regular user never reads another user's email or role. Bodies also carry lone
surrogates and over-long integers (tests/schemathesis_hooks.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from test_shutdown import CHEAP, login

from app.models import Role
from loadtests.harness import GunicornServer

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("LOOKOUT_FUZZ_EXAMPLES", "300"))


@pytest.fixture
def database_url(request):
    """PostgreSQL (production's database) when there is one, SQLite otherwise."""
    from conftest import _migrated_url

    return _migrated_url(request, "postgresql" if os.environ.get("TEST_DATABASE_URL") else "sqlite")


def server_errors_counted(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "http_server_requests_total" and sample.labels["status"].startswith("5"))


@pytest.mark.parametrize("role", [Role.ADMIN, Role.USER])
def test_schemathesis_finds_no_server_error_and_no_spec_violation(app, make_user, tmp_path, role):
    caller = make_user(role, email="caller@example.com")
    make_user(Role.USER, email="someone.else@example.com")  # whose email a user must never read
    env = {
        "DATABASE_URL": app.config["DATABASE_URL"],
        **CHEAP,
        "RATE_LIMIT_LOGIN": "100000 per minute",
        "RATE_LIMIT_READS": "100000 per minute",
        "LOG_LEVEL": "ERROR",
    }
    hooks = {"SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(Path(__file__).parent),
             "LOOKOUT_FUZZ_CALLER_ID": str(caller.id) if role is Role.USER else ""}
    with GunicornServer(env, workers=1, threads=4) as server:
        token = login(server.url, "caller@example.com")
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "--config-file",
                str(Path(__file__).with_name("schemathesis.toml")),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                "--mode",
                "all",
                "--max-examples",
                # A regular user reaches fewer operations past 401/403: half the examples there.
                str(EXAMPLES if role is Role.ADMIN else EXAMPLES // 2),
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
            timeout=900,
            cwd=tmp_path,
            env={**os.environ, **hooks},
        )
        server_errors = server_errors_counted(server.url)
        server_log = server.output()
    if os.environ.get("LOOKOUT_FUZZ_DUMP"):
        Path(os.environ["LOOKOUT_FUZZ_DUMP"]).write_text(run.stdout)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "0 generated" not in run.stdout
    assert "Traceback" not in server_log, server_log[-4000:]
    assert server_errors == 0
