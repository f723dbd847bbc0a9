"""The dependencies' exporters and the outside-in probe as the stacks deploy them: the jobs the rules
select, the scrape path through the NetworkPolicies, credentials as files, the images of the releases
the contract test runs, the Probe and its module against the operator's own CRD schema."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from dashboards.generate.dependencies import DEPS
from infra import crds
from infra.checks import _admits, _policies_for, schema_problems
from infra.components.exporters import POSTGRES_EXPORTER_IMAGE, REDIS_EXPORTER_IMAGE
from infra.components.monitoring import KPS_CHART
from infra.components.monitoring_values import RELEASE
from infra.components.probe import BLACKBOX, BLACKBOX_CHART, BLACKBOX_PORT, blackbox_config
from infra.config.fields import url_or_empty
from infra.mockrun import render
from infra.stack_config import ConfigError


def monitor_for(rendered, service: dict) -> dict:
    (monitor,) = [m for m in rendered.find("ServiceMonitor")
                  if m["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
                  and m["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]]
    return monitor


def pods_of(rendered, service: dict) -> dict:
    selector = service["spec"]["selector"]
    (workload,) = [d for d in rendered.find("Deployment")
                   if d["metadata"]["namespace"] == service["metadata"]["namespace"]
                   and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    return workload


@pytest.mark.parametrize("job", [DEPS.database_job, DEPS.store_job])
def test_dev_scrapes_each_exporter_under_the_job_the_rules_select(render_case, job):
    rendered = render_case("dev")
    service = rendered.one("Service", job)  # the ServiceMonitor names the job after the Service
    monitor = monitor_for(rendered, service)
    assert "jobLabel" not in monitor["spec"] and monitor["metadata"]["labels"]["release"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    workload = pods_of(rendered, service)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    namespace = service["metadata"]["namespace"]
    ingress = _policies_for(rendered.objects, namespace, labels, "ingress")
    assert ingress is not None, "the exporter's pods have no NetworkPolicy"
    port = service["spec"]["ports"][0]["port"]
    monitoring = rendered.one("Namespace", "monitoring")["metadata"]["name"]
    assert _admits(ingress, port, "TCP", monitoring, "from")
    assert not _admits(ingress, port, "TCP", "lookout", "from")  # Prometheus only


def test_the_exporters_read_their_credentials_from_files(render_case):
    rendered = render_case("dev")
    containers = {c["name"]: c for d in rendered.find("Deployment")
                  for c in d["spec"]["template"]["spec"]["containers"]}
    postgres, redis = containers["postgres-exporter"], containers["redis-exporter"]
    assert postgres["image"] == POSTGRES_EXPORTER_IMAGE and redis["image"] == REDIS_EXPORTER_IMAGE
    env = {e["name"]: e for e in postgres["env"]}
    assert set(env) == {"DATA_SOURCE_URI", "DATA_SOURCE_USER_FILE", "DATA_SOURCE_PASS_FILE"}
    assert all("valueFrom" not in e for e in env.values())
    assert "-redis.password-file" in redis["args"] and not any("password" in e["name"].lower()
                                                              for e in redis.get("env", []))
    # Egress of the database exporter: DNS and the database only.
    exporter = rendered.one("Deployment", "lookout-db-exporter")
    egress = _policies_for(rendered.objects, exporter["metadata"]["namespace"],
                           exporter["spec"]["template"]["metadata"]["labels"], "egress")
    assert egress is not None and _admits(egress, 5432, "TCP", exporter["metadata"]["namespace"], "to")
    assert not _admits(egress, 443, "TCP", None, "to")


def test_prod_with_an_external_database_runs_no_database_exporter(render_case):
    rendered = render_case("prod")
    assert rendered.find("Service", DEPS.database_job) == []


def test_the_image_pins_are_the_debian_exporters_releases():
    """The dashboards' names were checked on the Debian packages: the images are the same releases."""
    if shutil.which("dpkg-query") is None:
        pytest.skip("no dpkg here")
    for package, image in (("prometheus-postgres-exporter", POSTGRES_EXPORTER_IMAGE),
                           ("prometheus-redis-exporter", REDIS_EXPORTER_IMAGE)):
        found = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
        if found.returncode != 0:
            pytest.skip(f"{package} is not installed")
        upstream = found.stdout.split("-")[0]
        assert image.endswith(f":v{upstream}"), (package, upstream, image)


# --- outside-in ---------------------------------------------------------------------------------------


def test_dev_probes_the_app_s_readyz_through_its_service(render_case):
    rendered = render_case("dev")
    probe = rendered.one("Probe", DEPS.probe_job)
    assert probe["metadata"]["namespace"] == "monitoring"
    assert probe["metadata"]["labels"]["release"] == RELEASE  # what the stack's Prometheus selects
    spec = probe["spec"]
    assert spec["jobName"] == DEPS.probe_job  # the job the rules and the SLO board select
    # dev's certificate comes from a CA of its own and no public DNS serves its name: the inside view.
    assert spec["module"] == "http_ready"
    assert spec["targets"]["staticConfig"]["static"] == ["http://lookout.lookout.svc.cluster.local:80/readyz"]
    policy = rendered.one("NetworkPolicy", "lookout")["spec"]
    assert any(peer.get("podSelector") == {"matchLabels": {"app.kubernetes.io/instance": BLACKBOX}}
               for rule in policy["ingress"] for peer in rule.get("from", [])), "the probe may reach the app"
    assert spec["prober"]["url"] == f"{BLACKBOX}.monitoring.svc:{BLACKBOX_PORT}"
    (release,) = [r for r in rendered.releases if r["name"] == BLACKBOX]
    assert (release["chart"], release["version"], release["repositoryOpts"]["repo"]) == BLACKBOX_CHART
    assert release["values"]["config"] == blackbox_config()  # what the live test runs
    assert release["values"]["fullnameOverride"] == BLACKBOX


def test_a_public_https_url_is_probed_with_the_tls_module():
    rendered = render("dev", {"probeUrl": "https://lookout.example.com/readyz"})
    spec = rendered.one("Probe", DEPS.probe_job)["spec"]
    assert spec["module"] == "https_ready"
    assert spec["targets"]["staticConfig"]["static"] == ["https://lookout.example.com/readyz"]


@pytest.mark.parametrize("url", ["lookout.example.com/readyz", "ftp://lookout.example.com", "https://"])
def test_a_probe_url_that_is_no_http_url_fails_naming_the_key(url):
    with pytest.raises(ConfigError, match="probeUrl"):
        url_or_empty("probeUrl", url)


def test_the_probe_passes_the_operator_s_crd_schema_and_a_misspelt_field_fails(render_case):
    probe = render_case("dev").one("Probe", DEPS.probe_job)
    assert schema_problems([probe]) == []
    broken = {**probe, "spec": {**probe["spec"], "jobname": DEPS.probe_job}}
    assert schema_problems([broken]) != []
    data = json.loads((crds.CRDS_DIR / "kube-prometheus-stack-79.7.1.json").read_text())
    assert (data["chart"], data["version"]) == KPS_CHART[:2]
    assert data["source"]["tag"] == f"{KPS_CHART[0]}-{KPS_CHART[1]}"
