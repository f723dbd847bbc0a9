"""The edge, rendered for every stack: one load balancer, and every reference between the Gateway's
objects holds (listener -> certificate Secret -> route -> Service -> pods' port), its numbers agree
with the app's own settings, and the ACME or self-signed issuer is the stack's."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.config import ProductionConfig
from infra.checks import pods_selected
from infra.components.edge import CONTAINER_PORTS, proxy_labels
from infra.config import ConfigError
from infra.config.edge import EdgeSettings
from infra.mockrun import Rendered, render
from infra.stack import (
    EDGE,
    EDGE_TIMEOUTS,
    GUNICORN_KEEPALIVE,
    GUNICORN_TIMEOUT,
    NOTIFICATIONS_PATH,
    NOTIFIER,
    NOTIFIER_PORT,
)
from loadtests.harness import PRODUCTION_SECRETS

STACKS = ("dev", "staging", "prod")


@pytest.fixture(scope="module")
def stacks(render_case) -> dict[str, Rendered]:
    return {s: render("staging") if s == "staging" else render_case(s) for s in STACKS}


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return int(match.group(1))


def load_balancers(rendered: Rendered) -> list[dict[str, Any]]:
    services = [o for o in rendered.objects
                if o["kind"] == "Service" and o["spec"].get("type") == "LoadBalancer"]
    proxies = [o for o in rendered.objects if o["kind"] == "EnvoyProxy" and o["spec"]["provider"][
        "kubernetes"]["envoyService"].get("type", "LoadBalancer") == "LoadBalancer"]
    return services + proxies


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_staging_and_prod_probe_the_public_https_name(stacks, stack):
    probe = stacks[stack].one("Probe")["spec"]
    assert probe["module"] == "https_ready"
    assert probe["targets"]["staticConfig"]["static"] == [stacks[stack].outputs["serviceUrl"] + "/readyz"]


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_one_load_balancer_the_gateway_s_keeping_client_addresses(stacks, stack):
    (lb,) = load_balancers(stacks[stack])
    assert (lb["kind"], lb["metadata"]["name"], lb["metadata"]["namespace"]) == (
        "Service", EDGE, "envoy-gateway-system")
    assert lb["spec"]["externalTrafficPolicy"] == "Local"
    assert lb["spec"]["selector"] == proxy_labels(EDGE, "lookout")
    assert stacks[stack].one("Service", "lookout")["spec"]["type"] == "ClusterIP"
    assert stacks[stack].outputs["serviceUrl"].startswith("https://")


def test_dev_has_no_load_balancer_unless_asked(stacks):
    assert load_balancers(stacks["dev"]) == []  # serviceType ClusterIP: kind's e2e sets LoadBalancer


@pytest.mark.parametrize("stack", STACKS)
def test_listener_certificate_route_service_and_port_agree(stacks, stack):
    r = stacks[stack]
    gateway = r.one("Gateway", EDGE)
    listeners = {listener["name"]: listener for listener in gateway["spec"]["listeners"]}
    assert set(listeners) == {"http", "https"}
    https, http = listeners["https"], listeners["http"]
    assert (https["protocol"], https["port"], http["protocol"], http["port"]) == ("HTTPS", 443, "HTTP", 80)
    # cert-manager needs a hostname on the HTTPS listener; the route and certificate carry the same.
    hostname = https["hostname"]
    assert hostname and http["hostname"] == hostname
    assert https["tls"]["mode"] == "Terminate"
    (ref,) = https["tls"]["certificateRefs"]
    certificate = r.one("Certificate", EDGE)
    assert certificate["metadata"]["namespace"] == gateway["metadata"]["namespace"]  # no cross-namespace refs
    assert certificate["spec"]["secretName"] == ref["name"] and certificate["spec"]["dnsNames"] == [hostname]

    route = r.one("HTTPRoute", EDGE)
    assert route["spec"]["parentRefs"] == [{"name": EDGE, "sectionName": "https"}]
    assert route["spec"]["hostnames"] == [hostname]
    # Each path to its service's ClusterIP Service, whose port leads to a port its pods declare.
    backends = {}
    for rule in route["spec"]["rules"]:
        (match,), (backend,) = rule["matches"], rule["backendRefs"]
        backends[match["path"]["value"]] = backend["name"]
        service = r.one("Service", backend["name"])
        assert service["metadata"]["namespace"] == route["metadata"]["namespace"]
        assert service["spec"]["type"] == "ClusterIP", "behind the gateway, never a load balancer of its own"
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == backend["port"]]
        pods = pods_selected(r.objects, service["metadata"]["namespace"], service["spec"]["selector"])
        assert pods, backend["name"]
        for _, template in pods:
            (app,) = template["spec"]["containers"]
            assert port["targetPort"] in {p["name"] for p in app["ports"]}
    assert backends == {"/": "lookout", NOTIFICATIONS_PATH: NOTIFIER}

    redirect = r.one("HTTPRoute", f"{EDGE}-redirect")
    assert redirect["spec"]["parentRefs"] == [{"name": EDGE, "sectionName": "http"}]  # never on https
    (rule,) = redirect["spec"]["rules"]
    assert "backendRefs" not in rule
    assert rule["filters"] == [{"type": "RequestRedirect",
                                "requestRedirect": {"scheme": "https", "statusCode": 301}}]

    lb = r.one("Service", EDGE)
    assert {p["port"]: p["targetPort"] for p in lb["spec"]["ports"]} == CONTAINER_PORTS
    assert {p["port"] for p in lb["spec"]["ports"]} == {listener["port"] for listener in listeners.values()}


@pytest.mark.parametrize("stack", STACKS)
def test_tls_and_client_addresses(stacks, stack):
    client = stacks[stack].one("ClientTrafficPolicy", EDGE)["spec"]
    assert client["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": EDGE}]
    assert client["tls"]["minVersion"] in ("1.2", "1.3")
    # A client's own X-Forwarded-For is not believed: Envoy appends the address it saw.
    assert client["clientIPDetection"]["xForwardedFor"]["numTrustedHops"] == 0
    settings = app_settings(stacks[stack])
    assert settings["PROXY_TRUSTED_HOPS"] == "1"  # Envoy's appended entry, and nothing before it
    assert settings["PUBLIC_URL"] == stacks[stack].outputs["serviceUrl"]
    assert ProductionConfig.model_validate({
        "SECRET_KEY": "k" * 40, "DATABASE_URL": "postgresql://x/y",
        "JWT_PRIVATE_KEY": PRODUCTION_SECRETS["JWT_PRIVATE_KEY"], "JWT_KEY_ID": "k1",
        **{k: v for k, v in settings.items() if k in ProductionConfig.model_fields}}).PROXY_TRUSTED_HOPS == 1


def app_settings(rendered: Rendered) -> dict[str, str]:
    maps = [o for o in rendered.objects
            if o["kind"] == "ConfigMap" and "PROXY_TRUSTED_HOPS" in (o.get("data") or {})]
    assert len(maps) == 1
    return maps[0]["data"]


@pytest.mark.parametrize("stack", STACKS)
def test_timeouts_do_not_race(stacks, stack):
    """Envoy lets go of an idle upstream connection before gunicorn would; a request may take
    what the app's own bounds allow; a body the app refuses is refused at the edge too."""
    r = stacks[stack]
    backend = r.one("BackendTrafficPolicy", EDGE)["spec"]
    assert backend["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": EDGE}]
    settings = app_settings(r)
    keepalive = int(settings["GUNICORN_KEEPALIVE"])
    assert keepalive == GUNICORN_KEEPALIVE
    assert seconds(backend["timeout"]["http"]["connectionIdleTimeout"]) < keepalive
    request = seconds(backend["timeout"]["http"]["requestTimeout"])
    for rule in r.one("HTTPRoute", EDGE)["spec"]["rules"]:
        assert seconds(rule["timeouts"]["request"]) == request
    defaults = ProductionConfig.model_fields
    database_bound = sum(defaults[name].default for name in (
        "DATABASE_POOL_TIMEOUT", "DATABASE_CONNECT_TIMEOUT", "DATABASE_READ_TIMEOUT"))
    assert database_bound < request <= int(settings["GUNICORN_TIMEOUT"]) == GUNICORN_TIMEOUT
    body = int(backend["requestBuffer"]["limit"])
    assert body == int(settings["MAX_CONTENT_LENGTH"]) == EDGE_TIMEOUTS.body_bytes


def test_prod_and_staging_use_acme_over_the_http_listener_and_dev_a_ca_of_its_own(stacks):
    for stack in ("staging", "prod"):
        (issuer,) = stacks[stack].find("Issuer")
        acme = issuer["spec"]["acme"]
        assert acme["server"].startswith("https://") and "@" in acme["email"]
        (solver,) = acme["solvers"]
        assert solver["http01"]["gatewayHTTPRoute"]["parentRefs"] == [
            {"name": EDGE, "namespace": "lookout", "kind": "Gateway", "sectionName": "http"}]
        issuer_ref = stacks[stack].one("Certificate", EDGE)["spec"]["issuerRef"]
        assert issuer_ref["name"] == issuer["metadata"]["name"]
    dev = stacks["dev"]
    issuers = {i["metadata"]["name"]: i["spec"] for i in dev.find("Issuer")}
    assert issuers == {f"{EDGE}-selfsigned": {"selfSigned": {}},
                       f"{EDGE}-ca": {"ca": {"secretName": f"{EDGE}-ca"}}}
    assert dev.one("Certificate", f"{EDGE}-ca")["spec"]["isCA"] is True
    assert dev.one("Certificate", EDGE)["spec"]["issuerRef"]["name"] == f"{EDGE}-ca"


def test_cert_manager_chart_has_gateway_support_and_is_scraped(stacks):
    (release,) = [r for r in stacks["prod"].releases if r["name"] == "cert-manager"]
    values = release["values"]
    assert values["crds"] == {"enabled": True, "keep": True}
    assert values["config"]["enableGatewayAPI"] is True
    assert values["prometheus"]["servicemonitor"]["enabled"] is True
    assert values["prometheus"]["servicemonitor"]["labels"]["release"]


@pytest.mark.parametrize("stack", STACKS)
def test_app_port_admits_only_the_gateway_and_the_gateway_80_and_443(stacks, stack):
    r = stacks[stack]
    app_policy = r.one("NetworkPolicy", "lookout")["spec"]
    (to_app,) = [rule for rule in app_policy["ingress"]
                 if rule["ports"] == [{"protocol": "TCP", "port": 8000}]]
    gateway_peer = {"namespaceSelector": {"matchLabels": {
                        "kubernetes.io/metadata.name": "envoy-gateway-system"}},
                    "podSelector": {"matchLabels": proxy_labels(EDGE, "lookout")}}
    assert to_app["from"][0] == gateway_peer
    notifier_peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "lookout"}},
                     "podSelector": {"matchLabels": {"app.kubernetes.io/name": NOTIFIER}}}
    assert to_app["from"][1] == notifier_peer  # the public keys it verifies tokens with
    # dev's probe takes the inside view (a CA of its own); these stacks run no load generator.
    assert len(to_app["from"]) == (3 if stack == "dev" else 2)
    # The notifier's API: only through the gateway (its metrics port: only from Prometheus).
    notifier = r.one("NetworkPolicy", NOTIFIER)["spec"]
    (to_notifier,) = [rule for rule in notifier["ingress"]
                      if rule["ports"] == [{"protocol": "TCP", "port": NOTIFIER_PORT}]]
    assert to_notifier["from"] == [gateway_peer]
    proxy = r.one("NetworkPolicy", f"{EDGE}-proxy")["spec"]
    open_rule, scrape_rule = proxy["ingress"]
    assert "from" not in open_rule
    assert {p["port"] for p in open_rule["ports"]} == set(CONTAINER_PORTS.values())
    assert scrape_rule["from"] and scrape_rule["ports"] == [{"protocol": "TCP", "port": 19001}]
    for port, pods in ((8000, "lookout"), (NOTIFIER_PORT, NOTIFIER)):
        (rule,) = [rule for rule in proxy["egress"] if rule["ports"] == [{"protocol": "TCP", "port": port}]]
        assert rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == pods
    # ACME's HTTP-01 answer comes from cert-manager's solver pod, through Envoy.
    to_solver = [rule for rule in proxy["egress"] if rule["ports"] == [{"protocol": "TCP", "port": 8089}]]
    assert len(to_solver) == (0 if stack == "dev" else 1)


@pytest.mark.parametrize("values, error", [
    ({"hostname": "https://api.example.com"}, "edgeHostname"),
    ({"hostname": "*.example.com"}, "edgeHostname"),
    ({"acme_email": ""}, "acmeEmail"),
    ({"acme_server": "http://acme.example/directory"}, "acmeServer"),
    ({"acme_solver": "dns01"}, "acmeDnsApiToken"),
    ({"issuer": "letsencrypt"}, "certificateIssuer"),
])
def test_bad_edge_settings_are_named(values, error):
    good = {"hostname": "api.example.com", "replicas": 2, "issuer": "acme", "acme_email": "ops@example.com",
            "acme_server": "https://acme-v02.api.letsencrypt.org/directory", "acme_solver": "http01",
            "acme_dns_api_token": None}
    EdgeSettings(**good)
    with pytest.raises(ConfigError, match=error):
        EdgeSettings(**{**good, **values})
