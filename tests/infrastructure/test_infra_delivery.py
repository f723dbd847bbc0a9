"""What the pipeline deploys passes the same gates as dev and prod: the kind stack of e2e.yml
(dev plus infra.delivery.e2e.OVERRIDES) and staging; and every stack exports the image it runs,
which is what a rollback returns to."""

from __future__ import annotations

import pytest

import dashboards
from infra import checks
from infra.components.monitoring import RELEASE
from infra.delivery.e2e import OVERRIDES, STACK
from infra.mockrun import render
from infra.stack_config import stack_values

E2E_IMAGE = "lookout:e2e-0123456789abcdef"


@pytest.fixture(scope="module")
def e2e():
    return render(STACK, {**OVERRIDES, "image": E2E_IMAGE})


@pytest.fixture(scope="module")
def staging():
    return render("staging")


def test_the_kind_stack_passes_every_gate_with_a_load_balancer(e2e):
    assert checks.run_all(e2e.objects, dashboards.dashboard_files(), dashboards.rule_files(), RELEASE) == []
    (service,) = [o for o in e2e.objects if o["kind"] == "Service" and o["spec"]["type"] == "LoadBalancer"]
    assert service["metadata"]["name"] == "lookout-edge", "the gateway's Envoy pods are the one entry point"
    assert [p["port"] for p in service["spec"]["ports"]] == [80, 443], "HTTP redirects, HTTPS serves"
    pods = [o for o in e2e.objects if o["kind"] == "Rollout" and o["metadata"]["name"] == "lookout"]
    (container,) = pods[0]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == E2E_IMAGE and container["imagePullPolicy"] != "Always", \
        "an image loaded into kind cannot be pulled"


def test_the_staging_stack_passes_every_gate(staging):
    files = dashboards.dashboard_files(), dashboards.rule_files()
    assert checks.run_all(staging.objects, *files, RELEASE) == []
    values = stack_values("staging", fake_secrets=True)
    assert values["imagePullPolicy"] == "Always" and values["databaseMode"] == "external"
    assert values["minReplicas"] >= 2, "staging keeps serving through a node drain, as prod does"


@pytest.mark.parametrize("stack", ["e2e", "staging"])
def test_the_stack_exports_the_image_it_runs(stack, e2e, staging):
    rendered = {"e2e": e2e, "staging": staging}[stack]
    expected = E2E_IMAGE if stack == "e2e" else stack_values("staging", fake_secrets=True)["image"]
    assert rendered.outputs["image"] == expected
