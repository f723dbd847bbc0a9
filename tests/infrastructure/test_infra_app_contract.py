"""The app accepts what each stack gives it: its containers' environment, ConfigMap and mounted
secret files, read by the app's own settings loaders (``app.config.load_config`` for the users
API, its migrations and its relay; ``app.notifier.config.load_config`` for the notifier's API,
consumer and migrations).

Infra never imports the app; it knows the app by its image, ports, probes and environment. Here
the two meet: each stack is rendered under mocks (secrets are the stacks' stand-ins, the external
database URL the mock one), the app containers' environment is built as the kubelet would build
it, ``<NAME>_FILE`` paths point at the mounted Secret's keys written to a tmp dir, and a setting
the app would refuse at start fails here, with the app's message.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest

from app.config import Config as AppConfig
from app.config import ConfigError as AppConfigError
from app.config import load_config
from app.notifier.config import NotifierConfig
from app.notifier.config import load_config as load_notifier_config
from infra.config.service import ARGON2_MIB
from infra.mockrun import Rendered, render
from infra.stack_config import fake_secret

STACKS = ("dev", "staging", "prod", "prod-2-workers-rps-loadtest")  # the last from infra_cases.CASES


@pytest.fixture(scope="module")
def rendered(render_case) -> Any:
    cache: dict[str, Rendered] = {}

    def get(name: str) -> Rendered:
        if name not in cache:  # infra_cases.CASES has no staging
            cache[name] = render("staging") if name == "staging" else render_case(name)
        return cache[name]

    return get


def _data(rendered: Rendered, kind: str, name: str, namespace: str) -> dict[str, str]:
    (obj,) = [o for o in rendered.find(kind, name) if o["metadata"].get("namespace") == namespace]
    if kind == "Secret" and "data" in obj:
        return {key: base64.b64decode(value).decode() for key, value in obj["data"].items()}
    return dict(obj.get("stringData" if kind == "Secret" else "data") or {})


def app_containers(rendered: Rendered) -> list[tuple[str, dict[str, Any], dict[str, Any], str]]:
    """Return (workload, pod spec, container, namespace) for every container running the app's image."""
    image = rendered.outputs["image"]
    found = []
    for workload in rendered.find("Deployment") + rendered.find("Rollout") + rendered.find("Job"):
        spec = workload["spec"]["template"]["spec"]
        for container in spec["containers"]:
            if container["image"] == image:
                name = f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"
                found.append((name, spec, container, workload["metadata"]["namespace"]))
    return found


def container_environ(rendered: Rendered, pod: dict[str, Any], container: dict[str, Any], namespace: str,
                      root: Path) -> dict[str, str]:
    """Return the container's environment as the kubelet sets it; Secret and ConfigMap volumes are
    written under ``root`` and variables naming a path in them point there."""
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        kind, source = next(((k, volume[v]) for k, v in (("Secret", "secret"), ("ConfigMap", "configMap"))
                             if v in volume), (None, None))
        if kind is None or source is None:
            continue  # an emptyDir: nothing the app reads settings from
        data = _data(rendered, kind, source.get("secretName") or source["name"], namespace)
        paths = {item["key"]: item["path"] for item in source.get("items", [])} or {key: key for key in data}
        target = root / mount["mountPath"].lstrip("/")
        for key, path in paths.items():
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            (target / path).write_text(data[key])
        mounts[mount["mountPath"].rstrip("/") + "/"] = target

    def resolved(value: str) -> str:
        for prefix, target in mounts.items():
            if value.startswith(prefix):
                return str(target / value.removeprefix(prefix))
        return value

    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if ref in source:
                environ.update(_data(rendered, kind, source[ref]["name"], namespace))
    for var in container.get("env", []):
        if "value" in var:
            environ[var["name"]] = resolved(var["value"])
            continue
        ref = var["valueFrom"].get("configMapKeyRef") or var["valueFrom"]["secretKeyRef"]
        kind = "ConfigMap" if "configMapKeyRef" in var["valueFrom"] else "Secret"
        environ[var["name"]] = _data(rendered, kind, ref["name"], namespace)[ref["key"]]
    return environ


def is_notifier(container: dict[str, Any]) -> bool:
    """Whether a container runs the notifier (its commands name its package) rather than the users app."""
    return "app.notifier" in " ".join(container.get("command") or [])


def app_settings(rendered: Rendered, root: Path) -> dict[str, AppConfig | NotifierConfig]:
    """Load each app container's settings with its service's loader; raises the app's ConfigError."""
    loaded: dict[str, AppConfig | NotifierConfig] = {}
    for index, (name, pod, container, namespace) in enumerate(app_containers(rendered)):
        environ = container_environ(rendered, pod, container, namespace, root / str(index))
        try:
            loaded[name] = load_notifier_config(environ) if is_notifier(container) else load_config(environ)
        except AppConfigError as exc:
            raise AppConfigError(f"{name}: {exc}") from exc
    return loaded


def _ports(objects: Rendered, name: str) -> dict[str, int]:
    (_, _, container, _), *_ = [c for c in app_containers(objects) if c[0].startswith(name)]
    return {port["name"]: port["containerPort"] for port in container["ports"]}


@pytest.mark.parametrize("stack", STACKS)
def test_the_app_accepts_every_setting_each_stack_gives_it(stack: str, rendered, tmp_path: Path):
    objects = rendered(stack)
    everything = app_settings(objects, tmp_path)
    loaded = {n: s for n, s in everything.items() if isinstance(s, AppConfig)}
    assert sorted(name.rsplit("/", 1)[0].split("-migrate-")[0] for name in loaded) == [
        "Deployment/lookout-relay", "Job/lookout", "Rollout/lookout"]  # relay, migrations, server
    for name, settings in loaded.items():
        assert settings.ENV == "production", name
        assert settings.SECRET_KEY == fake_secret("secretKey"), f"{name}: read from its mounted file"
        assert settings.DATABASE_URL.startswith("postgresql+psycopg://"), name
        if "relay" not in name:  # the relay serves no requests, so it counts none
            assert settings.RATE_LIMIT_STORAGE_URL.startswith("redis://"), name  # every stack shares counts
        # The pods' memory is sized for this Argon2id cost per thread (infra/config/service.py).
        assert settings.PASSWORD_HASH_MEMORY_KIB == ARGON2_MIB * 1024, name
    (server,) = [s for n, s in loaded.items() if n.startswith("Rollout/")]
    assert server.METRICS_PORT == _ports(objects, "Rollout/")["metrics"]  # Prometheus scrapes where it serves
    (relay,) = [s for n, s in loaded.items() if "relay" in n]
    assert relay.BROKER_URL
    assert relay.RELAY_METRICS_PORT == _ports(objects, "Deployment/lookout-relay/")["metrics"]


@pytest.mark.parametrize("stack", STACKS)
def test_the_notifier_accepts_every_setting_each_stack_gives_it(stack: str, rendered, tmp_path: Path):
    objects = rendered(stack)
    loaded = {n: s for n, s in app_settings(objects, tmp_path).items() if isinstance(s, NotifierConfig)}
    assert sorted(name.rsplit("/", 1)[0].split("-migrate-")[0] for name in loaded) == [
        "Deployment/lookout-notifier", "Deployment/lookout-notifier-consumer", "Job/lookout-notifier"]
    catcher = stack == "dev"  # Mailpit: plain SMTP, which the production settings refuse
    for name, settings in loaded.items():
        assert settings.ENV == ("development" if catcher else "production"), name
        assert not settings.DEBUG, name
        assert settings.smtp_scheme == ("smtp+plain" if catcher else "smtps"), name
        assert settings.DATABASE_URL.startswith("postgresql+psycopg://"), name
        assert settings.DATABASE_URL.endswith("/notifier"), f"{name}: its own database"
        assert settings.BROKER_URL.startswith("amqp"), name
        assert settings.JWKS_URL.endswith("/.well-known/jwks.json"), name
    (server,) = [s for n, s in loaded.items() if n.startswith("Deployment/lookout-notifier/")]
    assert server.METRICS_PORT == _ports(objects, "Deployment/lookout-notifier/")["metrics"]
    (consumer,) = [s for n, s in loaded.items() if "consumer" in n]
    consumer_ports = _ports(objects, "Deployment/lookout-notifier-consumer/")
    assert consumer.CONSUMER_METRICS_PORT == consumer_ports["metrics"]


@pytest.mark.parametrize(
    ("stack", "overrides", "refusal"),
    [
        ("dev", {"secretKey": "changeme"}, "SECRET_KEY: is missing or a known default"),
        ("staging", {"jwtPrivateKey": "a-fresh-but-random-string"},
         "JWT_PRIVATE_KEY: is not an unencrypted PEM private key"),
        ("prod", {"databaseUrl": "mysql://lookout@db.internal.example/lookout"},
         "DATABASE_URL: must be a sqlite:// or postgresql:// URL"),
    ],
)
def test_a_stack_value_the_app_refuses_fails_with_the_apps_message(
        stack: str, overrides: dict[str, Any], refusal: str, tmp_path: Path):
    """Values infra passes on without a check of its own; the app refuses them at start."""
    with pytest.raises(AppConfigError, match=refusal):
        app_settings(render(stack, overrides), tmp_path)


def _app_object(rendered: Rendered, kind: str, prefix: str) -> dict[str, Any]:
    (obj,) = [o for o in rendered.find(kind) if o["metadata"]["name"].startswith(prefix)]
    return obj


def _drop_jwt_key(rendered: Rendered) -> None:
    del _app_object(rendered, "Secret", "lookout-secrets")["stringData"]["JWT_PRIVATE_KEY"]


def _bad_rate_limit(rendered: Rendered) -> None:
    _app_object(rendered, "ConfigMap", "lookout-settings")["data"]["RATE_LIMIT_LOGIN"] = "thirty a minute"


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (_drop_jwt_key, "JWT_PRIVATE_KEY_FILE: cannot read"),
        # Infra checks rate limits itself (rateLimitLogin), so none reaches a render: this stands
        # for one that got past it.
        (_bad_rate_limit, "RATE_LIMIT_LOGIN: 'thirty a minute' is not a rate limit such as '10 per minute'"),
    ],
)
def test_what_the_app_would_refuse_in_the_rendered_objects_fails(rendered, change, refusal: str,
                                                                 tmp_path: Path):
    objects = copy.deepcopy(rendered("dev"))
    change(objects)
    with pytest.raises(AppConfigError, match=refusal):
        app_settings(objects, tmp_path)
