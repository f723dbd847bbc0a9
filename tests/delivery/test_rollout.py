"""Deploy, smoke test, roll back: driven through a stand-in Pulumi CLI against real HTTP services.

A "good" image is served by a real Lookout under gunicorn, a "bad" one by a server answering 503;
the stand-in's `up` publishes the address of whichever image the stack was told to run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delivery.conftest import COMMIT, StandIn
from infra.delivery import preview as preview_module
from infra.delivery.pulumi_cli import PulumiStack
from infra.delivery.rollout import (
    CanaryWatch,
    Rollout,
    RolloutError,
    admin_credentials,
    bearer,
    check_image,
    main,
    rollback_target,
)
from infra.delivery.smoke import smoke

GOOD = "ghcr.io/lookout/lookout@sha256:" + "a" * 64
BAD = "ghcr.io/lookout/lookout@sha256:" + "b" * 64
WORSE = "ghcr.io/lookout/lookout@sha256:" + "c" * 64


@pytest.fixture
def stand_in(pulumi_standin: StandIn, lookout_service: str, failing_service: str,
             monkeypatch: pytest.MonkeyPatch) -> StandIn:
    addresses = {GOOD: lookout_service.removeprefix("http://"), BAD: failing_service, WORSE: failing_service}
    monkeypatch.setenv("PULUMI_STANDIN_ADDRESSES", json.dumps(addresses))
    return pulumi_standin


def rollout() -> Rollout:
    return Rollout(PulumiStack("staging"), smoker=lambda url, commit: smoke(url, commit, wait=1))


def deployed(stand_in: StandIn, image: str) -> None:
    """Put the stack on ``image`` as an earlier, successful run would have."""
    stack = PulumiStack("staging")
    stack.select(create=True)
    stack.set_config("image", image)
    stack.up()


def test_a_first_deploy_goes_live(stand_in: StandIn):
    PulumiStack("staging").select(create=True)
    outcome = rollout().run(GOOD, COMMIT)
    assert outcome.status == "deployed" and outcome.ok and outcome.previous is None
    assert stand_in.stack("staging")["outputs"]["image"] == GOOD


def test_a_failed_smoke_test_rolls_back_to_the_previous_digest(stand_in: StandIn):
    deployed(stand_in, GOOD)
    outcome = rollout().run(BAD, COMMIT)
    assert outcome.status == "rolled-back" and not outcome.ok
    assert outcome.previous == GOOD and f"rolled back to {GOOD}" in outcome.message
    assert stand_in.stack("staging")["config"]["image"] == GOOD
    ups = [c for c in stand_in.calls() if c["argv"][0] == "up"]
    assert len(ups) == 3, "the earlier deploy, the bad one, and the rollback"


def test_a_failed_pulumi_up_rolls_back_too(stand_in: StandIn, monkeypatch: pytest.MonkeyPatch):
    deployed(stand_in, GOOD)
    monkeypatch.setenv("PULUMI_STANDIN_FAIL_UP", BAD)
    outcome = rollout().run(BAD, COMMIT)
    assert outcome.status == "rolled-back" and "pulumi up failed" in outcome.message
    assert stand_in.stack("staging")["outputs"]["image"] == GOOD


def test_a_first_deploy_that_fails_has_nothing_to_roll_back_to(stand_in: StandIn):
    PulumiStack("staging").select(create=True)
    outcome = rollout().run(BAD, None)
    assert outcome.status == "failed" and "there is no previous image" in outcome.message


def test_a_rollback_that_fails_its_smoke_test_is_reported(stand_in: StandIn):
    deployed(stand_in, WORSE)  # what ran before was broken already
    outcome = rollout().run(BAD, None)
    assert outcome.status == "rollback-failed" and "fails its smoke test too" in outcome.message


@pytest.mark.parametrize("previous, new, target", [
    (None, GOOD, None), ("", GOOD, None), (GOOD, GOOD, None), (GOOD, BAD, GOOD)])
def test_rollback_target(previous: str | None, new: str, target: str | None):
    assert rollback_target(previous, new) == target


@pytest.mark.parametrize("image, allow_tag, ok", [
    (GOOD, False, True), ("ghcr.io/lookout/lookout:0.1.0", False, False),
    ("ghcr.io/lookout/lookout@sha256:abc", False, False), ("lookout:e2e-1", True, True), ("", True, False)])
def test_only_digests_are_deployed_unless_tags_are_allowed(image: str, allow_tag: bool, ok: bool):
    if ok:
        assert check_image(image, allow_tag) == image
    else:
        with pytest.raises(RolloutError):
            check_image(image, allow_tag)


def test_the_command_reports_to_github_and_exits_by_the_outcome(stand_in: StandIn, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    deployed(stand_in, GOOD)
    assert main(["--stack", "staging", "--image", BAD, "--expect-commit", COMMIT, "--wait", "1"]) == 1
    assert "status=rolled-back" in outputs.read_text() and "rolled-back" in summary.read_text()
    assert main(["--stack", "staging", "--image", GOOD, "--expect-commit", COMMIT, "--wait", "5"]) == 0
    assert "status=deployed\nurl=http://127.0.0.1:" in outputs.read_text()


def test_a_tag_is_refused_before_anything_runs(stand_in: StandIn):
    assert main(["--stack", "staging", "--image", "ghcr.io/lookout/lookout:latest"]) == 2
    assert stand_in.calls() == []


def test_secrets_go_in_on_stdin_never_on_the_command_line(stand_in: StandIn):
    stack = PulumiStack("dev")
    stack.select(create=True)
    Rollout(stack, smoker=lambda url, commit: smoke(url, commit, wait=1)).run(
        GOOD, None, secrets={"secretKey": "s3cr3t-" + "k" * 40})
    assert stand_in.stack("dev")["config"]["secretKey"] == "s3cr3t-" + "k" * 40
    assert not [c for c in stand_in.calls() if any("s3cr3t" in a for a in c["argv"])]


def test_a_kubeconfig_from_a_secret_is_a_private_file_for_the_run_only(stand_in: StandIn,
                                                                       monkeypatch: pytest.MonkeyPatch):
    deployed(stand_in, GOOD)
    monkeypatch.setenv("KUBECONFIG_DATA", "apiVersion: v1\nkind: Config\n")
    assert main(["--stack", "staging", "--image", GOOD, "--wait", "5"]) == 0
    seen = [c["kubeconfig"] for c in stand_in.calls() if c["kubeconfig"]]
    assert seen and all(k == {"text": "apiVersion: v1\nkind: Config\n", "mode": "0o600"} for k in seen)


def test_the_preview_becomes_a_comment(stand_in: StandIn, tmp_path: Path):
    deployed(stand_in, GOOD)
    out = tmp_path / "preview.md"
    assert preview_module.main(["--stack", "staging", "--out", str(out)]) == 0
    assert "pulumi preview` of **staging** would change" in out.read_text()
    assert "Deployment lookout update" in out.read_text()
    assert preview_module.main(["--stack", "nope", "--out", str(out)]) == 1
    assert "failed" in out.read_text()


def test_a_long_preview_is_cut_below_githubs_comment_limit():
    text = "\n".join(f"~ resource {i}" for i in range(20_000))
    body = preview_module.comment("prod", text, True)
    assert len(body) < 65_536 and "characters left out" in body and "resource 19999" in body


# --- canary releases: the controller's verdict, read with kubectl ----------------------------------

@pytest.fixture
def canary(stand_in: StandIn, kubectl_standin: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PULUMI_STANDIN_ROLLOUT", "lookout")
    return kubectl_standin


def canary_rollout() -> Rollout:
    return Rollout(PulumiStack("staging"), smoker=lambda url, commit: smoke(url, commit, wait=1),
                   watch=CanaryWatch(poll=0.01, timeout=5))


def test_a_promoted_canary_is_smoke_tested_and_live(canary: Path):
    deployed(canary, GOOD)
    outcome = canary_rollout().run(GOOD, COMMIT)
    assert outcome.status == "deployed"
    assert ["get", "rollout", "lookout", "-n", "lookout", "-o", "json"] in json.loads(canary.read_text())


@pytest.mark.parametrize("behaviour, reason", [
    ("abort", "the canary was aborted: RolloutAborted"),
    ("inconclusive", "could not be judged"),
    ("progress", "not promoted within"),
])
def test_a_canary_the_controller_does_not_promote_is_rolled_back(canary: Path, stand_in: StandIn,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 behaviour: str, reason: str):
    deployed(canary, GOOD)
    monkeypatch.setenv("KUBECTL_STANDIN_CANARY", json.dumps({BAD: behaviour}))
    watch = CanaryWatch(poll=0.01, timeout=0.3)
    outcome = Rollout(PulumiStack("staging"), smoker=lambda url, commit: smoke(url, commit, wait=1),
                      watch=watch).run(BAD, COMMIT)
    assert outcome.status == "rolled-back" and reason in outcome.message, outcome.message
    assert f"rolled back to {GOOD}" in outcome.message
    assert stand_in.stack("staging")["outputs"]["image"] == GOOD


def test_the_canary_gets_traffic_while_it_is_judged():
    """Staging has no users: the deploy's own trickle of reads is what the analysis judges."""
    import http.server
    import threading

    from infra.delivery.rollout import trickle
    from loadtests.harness import wait_until

    hits: list[str] = []
    tokens: list[str | None] = []

    class Count(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            tokens.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Count)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with trickle(f"http://127.0.0.1:{server.server_address[1]}", interval=0.01,
                     headers={"Authorization": "Bearer t0ken"}):
            wait_until(lambda: len(hits) >= 4, "four requests of the trickle")
        assert "/api/v1/users" in hits and "/" in hits
        assert set(tokens) == {"Bearer t0ken"}  # reads with a token: real work, not 401s
    finally:
        server.shutdown()
        server.server_close()


def test_the_smoke_account_is_the_stacks_bootstrap_admin_unless_one_is_given(pulumi_standin: StandIn):
    stack = PulumiStack("staging")
    stack.select(create=True)
    assert admin_credentials(stack, {}) is None
    stack.set_config("bootstrapAdminPassword", "bootstrap-pw", secret=True)
    assert admin_credentials(stack, {}) == ("admin@example.com", "bootstrap-pw")  # Pulumi.yaml's default
    stack.set_config("bootstrapAdminEmail", "ops@example.org")
    assert admin_credentials(stack, {}) == ("ops@example.org", "bootstrap-pw")
    given = {"LOOKOUT_SMOKE_EMAIL": "smoke@example.org", "LOOKOUT_SMOKE_PASSWORD": "smoke-pw"}
    assert admin_credentials(stack, given) == ("smoke@example.org", "smoke-pw")


def test_the_trickle_logs_in_when_it_can(lookout_service: str, smoke_account: tuple[str, str]):
    assert bearer(lookout_service, smoke_account)["Authorization"].startswith("Bearer ")
    assert bearer(lookout_service, (smoke_account[0], "wrong-password")) == {}
    assert bearer(lookout_service, None) == {} and bearer(None, smoke_account) == {}


class StackOutputs:
    """Just enough of a stack for choosing where the smoke test goes."""

    env: dict[str, str] = {}

    def __init__(self, outputs: dict[str, str]) -> None:
        self._outputs = outputs

    def outputs(self) -> dict[str, str]:
        return self._outputs


@pytest.mark.parametrize("outputs, url", [
    # Behind the edge the certificate names the public host: the address alone would fail TLS.
    ({"serviceUrl": "https://api.example.com", "loadBalancerAddress": "203.0.113.7"}, "https://api.example.com"),
    ({"serviceUrl": "http://lookout.lookout.svc.cluster.local:80", "loadBalancerAddress": "203.0.113.7"},
     "http://203.0.113.7"),
    ({"loadBalancerAddress": "203.0.113.7"}, "http://203.0.113.7"),
])
def test_the_smoke_test_goes_to_the_public_https_name_when_the_stack_has_one(outputs, url):
    chosen = Rollout(StackOutputs(outputs), smoker=lambda u, c: None, watch=CanaryWatch({}))._url(None)  # type: ignore[arg-type]
    assert chosen.rstrip("/") == url
