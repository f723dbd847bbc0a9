"""The bootstrap admin: stack settings -> a Secret only the migration Job mounts -> ``flask users
bootstrap-admin`` after the migrations, run here with the environment the kubelet would give it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.config import ConfigError
from infra.mockrun import Rendered, render
from infra.stack import BOOTSTRAP_COMMAND, MIGRATION_COMMAND, REPO_ROOT
from infra.stack_config import fake_secret
from infrastructure.test_infra_app_contract import container_environ

PASSWORD_VAR = "LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD"


def job_pod(rendered: Rendered) -> dict[str, Any]:
    """The users API's migration Job (the notifier has its own, without an admin)."""
    (job,) = [j for j in rendered.find("Job") if j["metadata"]["name"].startswith("lookout-migrate-")]
    return job["spec"]["template"]["spec"]


@pytest.mark.parametrize("case", ["dev", "prod"])
def test_the_migration_job_creates_the_admin_after_migrating(case: str, render_case):
    pod = job_pod(render_case(case))
    (migrate,), (step,) = pod["initContainers"], pod["containers"]
    assert migrate["command"] == list(MIGRATION_COMMAND) and step["command"] == list(BOOTSTRAP_COMMAND)
    assert step["image"] == migrate["image"] and step["securityContext"] == migrate["securityContext"]
    env = {e["name"]: e["value"] for e in step["env"]}
    assert env[f"{PASSWORD_VAR}_FILE"] == f"/var/run/secrets/lookout-job/{PASSWORD_VAR}"
    assert env["LOOKOUT_BOOTSTRAP_ADMIN_EMAIL_FILE"].startswith("/var/run/secrets/lookout-job/")
    assert not any("BOOTSTRAP" in e["name"] for e in migrate["env"])


@pytest.mark.parametrize("case", ["dev", "prod"])
def test_the_password_reaches_the_job_only_and_never_in_plain_text(case: str, render_case):
    rendered = render_case(case)
    volume = next(v for v in job_pod(rendered)["volumes"] if v["name"] == "job-secrets")
    secret = rendered.one("Secret", volume["secret"]["secretName"])
    assert secret["stringData"][PASSWORD_VAR] == fake_secret("bootstrapAdminPassword")
    assert secret["stringData"]["LOOKOUT_BOOTSTRAP_ADMIN_EMAIL"] == "admin@example.com"
    outside = [o for o in rendered.objects if o is not secret]
    assert fake_secret("bootstrapAdminPassword") not in json.dumps(outside)
    for workload in rendered.find("Rollout") + rendered.find("Deployment"):
        volumes = workload["spec"]["template"]["spec"].get("volumes", [])
        assert volume["secret"]["secretName"] not in json.dumps(volumes), workload["metadata"]["name"]


def test_the_stacks_email_is_used_and_a_bad_one_is_refused():
    rendered = render("dev", {"bootstrapAdminEmail": "ops@example.org"})
    volume = next(v for v in job_pod(rendered)["volumes"] if v["name"] == "job-secrets")
    secret = rendered.one("Secret", volume["secret"]["secretName"])
    assert secret["stringData"]["LOOKOUT_BOOTSTRAP_ADMIN_EMAIL"] == "ops@example.org"
    with pytest.raises(ConfigError, match="bootstrapAdminEmail: 'ops-at-example' is not an email address"):
        render("dev", {"bootstrapAdminEmail": "ops-at-example"})


def test_the_job_migrates_and_creates_the_admin_in_a_real_database(render_case, tmp_path: Path):
    """Build the Job's environment as the kubelet would, then run its two commands, twice, on a
    new SQLite database (the cluster's PostgreSQL is the mock one)."""
    rendered = render_case("dev")
    pod = job_pod(rendered)
    environ = container_environ(rendered, pod, pod["containers"][0], "lookout", tmp_path)
    for name in ("DATABASE_URL_FILE", "RATE_LIMIT_STORAGE_URL_FILE", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        environ.pop(name, None)  # the cluster's database and peers: a local database instead
    environ |= {"DATABASE_URL": f"sqlite:///{tmp_path / 'job.db'}", "OTEL_TRACES_EXPORTER": "none",
                "PATH": os.environ["PATH"]}

    def run(container: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *container["command"]], cwd=REPO_ROOT, env=environ,
                              capture_output=True, text=True, timeout=120, check=False)

    runs = []
    for _ in range(2):  # every deploy of a new image runs the Job again
        migrated = run(pod["initContainers"][0])
        assert migrated.returncode == 0, migrated.stderr
        runs.append(run(pod["containers"][0]))
    assert runs[0].returncode == 0, runs[0].stderr
    assert "created bootstrap admin admin@example.com" in runs[0].stdout
    assert runs[1].returncode == 0, runs[1].stderr
    assert "exists" in runs[1].stdout and "unchanged" in runs[1].stdout
