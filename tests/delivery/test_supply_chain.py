"""The audit of every lock, the exceptions file (none expired), and the image's signature before a deploy.

pip-audit and cosign need the network (a vulnerability service; Sigstore and the registry), so
they are stand-ins here (tests/standins) driven through the real scripts; the exports they audit
are real `uv export`s of the real locks.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from delivery.conftest import STANDIN, StandIn
from infra.delivery import audit, signature
from infra.delivery.audit import Accepted, ExceptionsError, Finding, load_exceptions, verdict
from infra.delivery.pulumi_cli import PulumiStack
from infra.delivery.rollout import main as rollout_main
from loadtests.harness import ROOT

STANDINS = STANDIN.parent
TODAY = dt.date(2026, 6, 1)
IMAGE = "ghcr.io/lookout/lookout@sha256:" + "a" * 64
OTHER = "ghcr.io/lookout/lookout@sha256:" + "b" * 64


def exceptions_file(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "exceptions.yaml"
    path.write_text(yaml.safe_dump({"exceptions": entries}))
    return path


GOOD = {"id": "GHSA-2x3c-6p4w-vq8m", "package": "somepackage", "expires": dt.date(2026, 7, 1),
        "reason": "Only its CLI is affected, which Lookout never runs."}


def test_the_repo_exceptions_are_valid_and_none_has_expired():
    """Fails the day an exception expires: fix the finding, or renew it with a reason."""
    load_exceptions()


@pytest.mark.parametrize("change, problem", [
    ({"expires": dt.date(2026, 5, 31)}, "expired on 2026-05-31"),
    ({"id": "not-an-id"}, "not a CVE, GHSA or PYSEC"),
    ({"reason": "n/a"}, "must say why"),
    ({"expires": "soon"}, "must be a date"),
    ({"package": None, "owner": "x"}, "exactly id, package, reason and expires"),
])
def test_a_bad_or_expired_exception_is_refused(tmp_path: Path, change: dict, problem: str):
    entry = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ExceptionsError, match=problem):
        load_exceptions(exceptions_file(tmp_path, [entry]), TODAY)
    assert load_exceptions(exceptions_file(tmp_path, [GOOD]), TODAY)[0].expires == dt.date(2026, 7, 1)


def test_an_expired_exception_fails_make_trivyignore_and_a_valid_one_reaches_trivy(tmp_path: Path):
    expired = exceptions_file(tmp_path, [{**GOOD, "expires": dt.date(2020, 1, 1)}])
    out = tmp_path / "trivyignore.yaml"
    assert audit.main(["--exceptions", str(expired), "--trivyignore", str(out)]) == 1 and not out.exists()
    valid = exceptions_file(tmp_path, [{**GOOD, "expires": dt.date.today() + dt.timedelta(days=30)}])
    assert audit.main(["--exceptions", str(valid), "--trivyignore", str(out)]) == 0
    written = yaml.safe_load(out.read_text())["vulnerabilities"]
    assert written == [{"id": GOOD["id"], "statement": GOOD["reason"],
                        "expired_at": (dt.date.today() + dt.timedelta(days=30)).isoformat()}]


def finding(fix: tuple[str, ...] = ("2.0",), vuln: str = "PYSEC-2026-1",
            aliases: tuple[str, ...] = ("GHSA-2x3c-6p4w-vq8m",)) -> Finding:
    return Finding("uv.lock", "somepackage", "1.0", vuln, aliases, fix)


def test_a_fixable_finding_fails_unless_an_exception_names_it_or_an_alias():
    accepted = [Accepted(GOOD["id"], "SomePackage", GOOD["reason"], GOOD["expires"])]
    failing, notes = verdict([finding()], accepted)
    assert failing == [] and "accepted until 2026-07-01" in notes[0]
    failing, _ = verdict([finding(vuln="PYSEC-2026-2", aliases=("CVE-2026-0001",))], accepted)
    assert len(failing) == 1
    failing, notes = verdict([finding(fix=())], [])
    assert failing == [] and "no fixed version yet" in notes[0]


@pytest.fixture
def standin_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_AUDIT", str(STANDINS / "pip-audit"))


def test_every_lock_is_exported_with_hashes_and_audited(standin_audit: None, capsys: pytest.CaptureFixture):
    assert audit.main([]) == 0
    out = capsys.readouterr().out
    for lock in ("uv.lock", ".ci/checkov/uv.lock", ".ci/bootstrap/requirements.txt"):
        assert f"audit: {lock}: " in out
    assert "--disable-pip --require-hashes" in out and "0 findings, 0 failing" in out


def test_a_fixable_finding_in_a_lock_fails_the_audit(standin_audit: None, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture):
    report = {"dependencies": [{"name": "flask", "version": "3.1.0", "vulns": [
        {"id": "GHSA-2x3c-6p4w-vq8m", "fix_versions": ["3.1.1"], "aliases": ["CVE-2026-1234"]}]}]}
    monkeypatch.setenv("PIP_AUDIT_STANDIN_REPORT", json.dumps({"uv.lock.txt": report}))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert audit.main([]) == 1
    assert "FAIL flask 3.1.0 (uv.lock): GHSA-2x3c-6p4w-vq8m, fixed in 3.1.1" in capsys.readouterr().out
    assert "1 failing of 1 findings" in summary.read_text()
    accepted = exceptions_file(tmp_path, [{**GOOD, "package": "flask",
                                           "expires": dt.date.today() + dt.timedelta(days=7)}])
    assert audit.main(["--exceptions", str(accepted)]) == 0


# --- signatures -----------------------------------------------------------------------------------

@pytest.fixture
def cosign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "cosign-state.json"
    monkeypatch.setenv("COSIGN", str(STANDINS / "cosign"))
    monkeypatch.setenv("COSIGN_STANDIN_STATE", str(state))
    monkeypatch.setenv("GITHUB_REPOSITORY", "lookout/lookout")
    monkeypatch.delenv("SIGNER_IDENTITY", raising=False)
    return state


def test_a_signed_digest_verifies_and_an_unsigned_one_is_refused(cosign: Path):
    assert signature.main(["sign", IMAGE]) == 0
    assert signature.verify(IMAGE) == 1
    assert signature.main(["verify", OTHER]) == 1


def test_a_signature_by_another_workflow_or_branch_is_refused(cosign: Path, monkeypatch: pytest.MonkeyPatch):
    for identity in ("https://github.com/lookout/lookout/.github/workflows/deploy.yml@refs/heads/feature",
                     "https://github.com/evil/lookout/.github/workflows/deploy.yml@refs/heads/main",
                     "https://github.com/lookout/lookout/.github/workflows/ci.yml@refs/heads/main"):
        monkeypatch.setenv("COSIGN_STANDIN_IDENTITY", identity)
        signature.sign(IMAGE)
        with pytest.raises(signature.SignatureError, match="no valid signature"):
            signature.verify(IMAGE)


def test_a_tag_cannot_be_signed_or_verified(cosign: Path):
    with pytest.raises(signature.SignatureError, match="not an image by digest"):
        signature.verify("ghcr.io/lookout/lookout:latest")
    with pytest.raises(signature.SignatureError, match="not an image by digest"):
        signature.sign("ghcr.io/lookout/lookout:latest")


def test_the_deploy_refuses_an_unsigned_image_before_pulumi_runs(cosign: Path, pulumi_standin: StandIn):
    PulumiStack("staging").select(create=True)
    assert rollout_main(["--stack", "staging", "--image", OTHER, "--require-signature", "--wait", "1"]) == 2
    assert not [c for c in pulumi_standin.calls() if c["argv"][0] in ("up", "config")]


def test_make_deploy_always_asks_for_the_signature():
    import subprocess

    dry = subprocess.run(["make", "--dry-run", "deploy", "STACK=staging", f"IMAGE={IMAGE}"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "--require-signature" in dry
