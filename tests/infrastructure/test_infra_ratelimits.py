"""RateLimitStore: one Redis-protocol server for every pod's rate-limit counts, locked down.

The rendered objects are checked under Pulumi's mocks; the rendered configuration is run by a
real redis-server on 127.0.0.1, and two instances of the app count against one budget in it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from faults import redis_server_binary

from app import create_app
from infra.checks import _admits, _policies_for
from infra.components import RateLimitStore, RateLimitStoreArgs, Resources
from infra.components.ratelimits import PORT, server_conf
from infra.mockrun import Rendered, render
from infra.stack import repo_files
from infrastructure.conftest import REQUIRE_SERVICES, render_with_url
from loadtests.harness import free_port

CLIENTS = {"app.kubernetes.io/name": "shop", "app.kubernetes.io/component": "server"}


def build(args: RateLimitStoreArgs) -> tuple[Rendered, RateLimitStore]:
    return render_with_url(lambda: RateLimitStore("shop-ratelimit", args))


def test_a_password_protected_server_without_disk_that_only_the_service_reaches():
    rendered, store = build(RateLimitStoreArgs(client_namespace="shop", client_labels=CLIENTS,
                                               namespace="shop-ratelimit"))
    config = rendered.one("Secret")
    password = config["stringData"]["password"]
    assert len(password) == 32 and password.startswith("mock"), "the mock of random.RandomPassword"
    conf = config["stringData"]["valkey.conf"]
    assert conf == server_conf(password, 64)
    assert f"requirepass {password}" in conf.splitlines() and 'save ""' in conf.splitlines()
    assert rendered.outputs["url"] == "[secret]"
    assert rendered.outputs["url_plain"] == (
        f"redis://:{password}@shop-ratelimit.shop-ratelimit.svc.cluster.local:{PORT}/0")

    deployment = rendered.one("Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert password not in str(pod), "the password is read from the mounted file, never written in the pod"
    assert container["args"][-1] == "/etc/valkey/valkey.conf"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["secret"]["secretName"] == config["metadata"]["name"]
    labels = rendered.one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

    objects = rendered.objects
    ingress = _policies_for(objects, "shop-ratelimit", pod_labels(deployment), "ingress")
    assert ingress is not None and _admits(ingress, PORT, "TCP", "shop", "from")
    assert not _admits(ingress, PORT, "TCP", "elsewhere", "from"), "only the service's namespace gets in"
    assert ingress[0]["from"][0]["podSelector"] == {"matchLabels": CLIENTS}
    assert store.peer.namespace == "shop-ratelimit" and store.peer.port == PORT
    assert store.peer.pod_labels == deployment["spec"]["selector"]["matchLabels"]


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("max_memory_mib", [0, 128, 512])
def test_the_memory_bound_must_fit_in_the_container(max_memory_mib):
    args = RateLimitStoreArgs(client_namespace="shop", client_labels=CLIENTS, max_memory_mib=max_memory_mib,
                              resources=Resources("50m", "250m", "96Mi", "128Mi"))
    with pytest.raises(ValueError, match="max_memory_mib"):
        build(args)


@pytest.fixture
def server(tmp_path: Path):
    """A real redis-server on 127.0.0.1 running the rendered configuration; stopped by its PID."""
    binary = redis_server_binary()
    if binary is None:
        reason = "redis-server not found (Debian package redis-server); set REDIS_SERVER"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason}; LOOKOUT_REQUIRE_SERVICES=1 makes it mandatory")
        pytest.skip(reason)
    password, port, data = "test" + "p4ssw0rd" * 3, free_port(), tmp_path / "data"
    data.mkdir()
    conf = tmp_path / "valkey.conf"
    conf.write_text(server_conf(password, 64, port=port, data_dir=str(data), bind="127.0.0.1"))
    log = (tmp_path / "server.log").open("wb")  # a file, not a pipe nobody reads
    process = subprocess.Popen([binary, str(conf)], stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url, data
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_the_rendered_configuration_runs_and_keeps_nothing(server):
    url, data = server
    anonymous = redis.Redis.from_url(url.replace(url.split("@")[0] + "@", "redis://"))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    client = redis.Redis.from_url(url, decode_responses=True)
    assert client.config_get("maxmemory") == {"maxmemory": str(64 * 2**20)}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}
    client.set("counter", 1)
    client.shutdown()  # with nothing to save, the server writes no snapshot even on shutdown
    assert list(data.iterdir()) == []


def test_two_instances_of_the_app_count_against_one_budget_in_it(server, tmp_path):
    """What the store is for: two pods share a limit. Each counting alone lets twice as much through."""
    url, _ = server

    def statuses(storage_url: str) -> list[int]:
        settings = {"DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
                    "RATE_LIMIT_STORAGE_URL": storage_url, "RATE_LIMIT_WRITES": "2 per minute"}
        first, second = create_app(settings).test_client(), create_app(settings).test_client()
        return [client.post("/api/v1/users", json={}).status_code
                for client in (first, second, first, second)]

    assert statuses(url) == [401, 401, 429, 429]
    assert statuses("memory://") == [401, 401, 401, 401]


@pytest.mark.parametrize("case", ["dev", "prod"])
def test_every_stack_counts_in_the_store_and_memory_leaves_it_out(case, render_case):
    secrets = next(o for o in render_case(case).objects
                   if o["kind"] == "Secret" and o["metadata"]["name"].startswith("lookout-secrets"))
    assert secrets["stringData"]["RATE_LIMIT_STORAGE_URL"].startswith(
        "redis://:mock"), "the generated password, then the in-cluster Service"
    assert secrets["stringData"]["RATE_LIMIT_STORAGE_URL"].endswith(
        f"@lookout-ratelimit.lookout-ratelimit.svc.cluster.local:{PORT}/0")

    alone = render(case, {"rateLimitStorage": "memory"}, repo_files())
    assert not [o for o in alone.objects if o["metadata"].get("namespace") == "lookout-ratelimit"]
    secrets = next(o for o in alone.objects
                   if o["kind"] == "Secret" and o["metadata"]["name"].startswith("lookout-secrets"))
    assert "RATE_LIMIT_STORAGE_URL" not in secrets["stringData"]


@pytest.mark.parametrize(("key", "setting"), [("rateLimitLogin", "RATE_LIMIT_LOGIN"),
                                              ("rateLimitLoginFailures", "RATE_LIMIT_LOGIN_FAILURES"),
                                              ("rateLimitWrites", "RATE_LIMIT_WRITES")])
def test_the_limits_are_stack_settings_whose_defaults_are_the_apps(key, setting):
    """The app's defaults unless a stack says otherwise (an in-cluster load test needs more)."""
    from app.config import Config as AppConfig
    from infra.stack_config import PROJECT_FILE, schema

    default = schema(PROJECT_FILE)[key].default
    assert default == AppConfig.model_fields[setting].default

    def app_settings(rendered) -> dict[str, str]:
        return next(o for o in rendered.objects if o["kind"] == "ConfigMap"
                    and o["metadata"]["name"].startswith("lookout-settings"))["data"]

    assert app_settings(render("dev", {}, repo_files()))[setting] == default
    raised = app_settings(render("dev", {key: "1000 per minute"}, repo_files()))
    assert raised[setting] == "1000 per minute"
    app = create_app({"DATABASE_URL": "sqlite://", setting: raised[setting]})  # the app reads it
    assert app.config[setting] == "1000 per minute"
