"""The rule files: promtool checks them and runs the unit tests in tests/promtool, which must give
every alert a firing case, a not-firing case and its `for:` boundary; each gate refuses a bad case.

promtool compares annotations verbatim, rendered values included, so the unit tests run against a
copy of the rule files without annotations: what an alert is (expression, `for:`, labels) is
tested here, the annotations' templates by `promtool check rules` and by the live Prometheus test.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import service_missing

from dashboards import HERE, duration_seconds, load_slo, rule_files, rule_groups

ROOT = HERE.parent
UNIT_TESTS = sorted((ROOT / "tests" / "promtool").glob("*.yaml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        service_missing("promtool is not installed (Debian package prometheus)")
    return path


def run(promtool: str, *args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


def without_annotations(root: Path) -> Path:
    """Lay out the unit tests and annotation-free rule files under ``root`` as in the repo."""
    (root / "tests" / "promtool").mkdir(parents=True)
    (root / "dashboards" / "rules").mkdir(parents=True)
    for path in UNIT_TESTS:
        shutil.copy(path, root / "tests" / "promtool" / path.name)
    for path in rule_files():
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
        (root / "dashboards" / "rules" / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def test_promtool_checks_every_rule_file(promtool):
    assert rule_files(), "no rule files"
    for path in rule_files():
        result = run(promtool, "check", "rules", path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_refuses_a_broken_rule_file(promtool, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"alert": "X", "expr": "sum(rate(http_server_requests_total[5m])", "for": "5m"}]}]}))
    assert run(promtool, "check", "rules", broken).returncode != 0
    bad_template = tmp_path / "template.yaml"
    bad_template.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"alert": "X", "expr": "up == 0", "annotations": {"summary": "{{ $value | nosuchfunction }}"}}]}]}))
    assert run(promtool, "check", "rules", bad_template).returncode != 0


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(promtool, tmp_path, unit_test):
    root = without_annotations(tmp_path)
    result = run(promtool, "test", "rules", f"tests/promtool/{unit_test.name}", cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_fails_a_wrong_expectation(promtool, tmp_path):
    root = without_annotations(tmp_path)
    test = root / "tests" / "promtool" / "slo_test.yaml"
    text = test.read_text()
    # The fast burn pages after exactly 2 minutes: expecting it a minute early must fail.
    early = "      - eval_time: 2m\n        alertname: LookoutAvailabilityBurn1h\n        exp_alerts:\n"
    text = text.replace("      - {eval_time: 2m, alertname: LookoutAvailabilityBurn1h, exp_alerts: []}\n", "")
    firing = "      - eval_time: 3m\n        alertname: LookoutAvailabilityBurn1h\n        exp_alerts:\n"
    text = text.replace(firing, early)
    assert early in text
    test.write_text(text)
    result = run(promtool, "test", "rules", "tests/promtool/slo_test.yaml", cwd=root)
    assert result.returncode == 1 and "LookoutAvailabilityBurn1h" in result.stdout + result.stderr


def test_the_unit_tests_read_the_real_rule_files():
    for path in UNIT_TESTS:
        for name in yaml.safe_load(path.read_text())["rule_files"]:
            assert (path.parent / name).resolve() in [p.resolve() for p in rule_files()], (path.name, name)


# --- the coverage gate --------------------------------------------------------------------------------


def coverage_problems(groups: list[dict[str, Any]], unit_tests: list[dict[str, Any]]) -> list[str]:
    """Name every alert without a firing case, a not-firing case, or (with `for:`) a boundary pair.

    A boundary pair is, in one test group, no alert at t and the alert firing at t plus one
    evaluation interval: the `for:` elapsed between the two.
    """
    # alert -> [(file, group, evaluation number, fires)]
    cases: dict[str, list[tuple[int, int, float, bool]]] = defaultdict(list)
    for f, doc in enumerate(unit_tests):
        step = duration_seconds(doc.get("evaluation_interval", "1m"))
        for g, group in enumerate(doc["tests"]):
            for case in group.get("alert_rule_test") or []:
                cases[case["alertname"]].append((f, g, duration_seconds(case["eval_time"]) / step,
                                                 bool(case.get("exp_alerts"))))
    problems = []
    for rule in (r for group in groups for r in group["rules"] if "alert" in r):
        name, found = rule["alert"], cases.get(rule["alert"], [])
        if not any(fires for *_, fires in found):
            problems.append(f"{name}: no case where it fires")
        if not any(not fires for *_, fires in found):
            problems.append(f"{name}: no case where it must not fire")
        if duration_seconds(rule.get("for", "0s")) > 0:
            quiet = {(f, g, t) for f, g, t, fires in found if not fires}
            if not any((f, g, t - 1) in quiet for f, g, t, fires in found if fires):
                problems.append(f"{name}: no `for:` boundary (quiet one evaluation before it fires)")
    return problems


def unit_test_docs() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in UNIT_TESTS]


def test_every_alert_has_a_firing_a_quiet_and_a_boundary_case():
    alerts = [r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r]
    # the SLOs' burn rates (logins', the notifier's), operational, the events' way to an email
    # (outbox, relay, broker, consumer, dead letters), dependencies, certificates
    assert len(alerts) == 35
    assert coverage_problems(rule_groups(), unit_test_docs()) == []


def _drop_cases(docs: list[dict[str, Any]], keep: Any) -> list[dict[str, Any]]:
    for doc in docs:
        for group in doc["tests"]:
            group["alert_rule_test"] = [c for c in group.get("alert_rule_test") or [] if keep(c)]
    return docs


def test_the_coverage_gate_names_an_alert_without_cases():
    docs = _drop_cases(unit_test_docs(), lambda c: c["alertname"] != "LookoutSaturated")
    assert coverage_problems(rule_groups(), docs) == [
        "LookoutSaturated: no case where it fires", "LookoutSaturated: no case where it must not fire",
        "LookoutSaturated: no `for:` boundary (quiet one evaluation before it fires)"]


def test_the_coverage_gate_names_an_alert_without_its_boundary():
    boundary = ("LookoutHPAMaxedOut", "34m")
    docs = _drop_cases(unit_test_docs(), lambda c: (c["alertname"], c["eval_time"]) != boundary)
    assert coverage_problems(rule_groups(), docs) == [
        "LookoutHPAMaxedOut: no `for:` boundary (quiet one evaluation before it fires)"]


# --- what every alert carries ----------------------------------------------------------------------------


def alerts() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_every_alert_has_a_severity_and_a_runbook_that_says_what_to_check_and_do(rule):
    assert rule["labels"]["severity"] in {"page", "ticket"}
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook", "runbook_url"} <= set(annotations)
    assert annotations["runbook"].startswith("Check") and " Do: " in annotations["runbook"]
    assert annotations["runbook_url"].startswith(f"{load_slo().runbooks}#")


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces to hyphens."""
    import re

    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in markdown.splitlines() if line.startswith("#")}


def test_every_runbook_url_points_at_a_readme_section():
    anchors = github_anchors((ROOT / "dashboards" / "README.md").read_text())
    sections = {load_slo().runbook_url(anchor) for anchor in anchors}
    missing = {r["annotations"]["runbook_url"] for r in alerts()} - sections
    assert missing == set()


def test_the_anchor_check_would_see_a_missing_section():
    assert "lookouttargetdown" in github_anchors("#### LookoutTargetDown\n")
    assert "availability-burn-rate-alerts" in github_anchors("### Availability burn-rate alerts\n")
    assert "lookouttargetdown" not in github_anchors("LookoutTargetDown is described here\n")
