"""Pulumi.yaml declares every key; stack files only override declared keys, with the declared types."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from infra import stack_config
from infra.stack import REPO_ROOT
from infra.stack_config import (
    ConfigError,
    StackConfigError,
    parse_quantity,
    schema,
    stack_overrides,
    stack_values,
)

STACKS = ("dev", "prod")


def test_every_key_has_a_type_a_description_and_a_default_unless_secret():
    keys = schema()
    assert len(keys) >= 30
    for key in keys.values():
        assert key.type in stack_config.TYPES and key.description
        assert key.required == key.secret, f"{key.name}: only secrets go without a default"
    secrets = {k.name for k in keys.values() if k.secret}
    assert secrets == {"secretKey", "jwtPrivateKey", "bootstrapAdminPassword"}


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_hold_only_overrides(stack: str):
    keys, overrides = schema(), stack_overrides(stack)
    assert overrides, f"Pulumi.{stack}.yaml overrides something"
    for name, value in overrides.items():
        assert name in keys, f"{name} is not declared"
        assert value != keys[name].default, f"Pulumi.{stack}.yaml repeats the default of {name}"


@pytest.mark.parametrize("stack", STACKS)
def test_stack_values_merge_defaults_and_overrides(stack: str):
    values = stack_values(stack, fake_secrets=True)
    assert set(values) == set(schema())
    assert values["databaseMode"] == {"dev": "incluster", "prod": "external"}[stack]
    assert values["gunicornWorkers"] == 1 and values["gunicornThreads"] == 8
    assert len(values["secretKey"]) >= 32


def test_secrets_are_required_without_stand_ins():
    with pytest.raises(StackConfigError, match="missing configuration value 'secretKey'"):
        stack_values("dev")


def _project(tmp_path: Path, config: dict, stack: dict | None = None) -> Path:
    (tmp_path / "Pulumi.yaml").write_text(
        yaml.safe_dump({"name": "lookout", "runtime": "python", "config": config})
    )
    (tmp_path / "Pulumi.test.yaml").write_text(yaml.safe_dump({"config": stack or {}}))
    return tmp_path


GOOD = {
    "replicas": {"type": "integer", "default": 2, "description": "d"},
    "ranges": {"type": "array", "items": {"type": "string"}, "default": [], "description": "d"},
    "token": {"type": "string", "secret": True, "description": "d"},
}


@pytest.mark.parametrize(
    ("config", "stack", "error"),
    [
        ({"x": {"default": 1, "description": "d"}}, {}, "needs a type"),
        ({"x": {"type": "float", "default": 1, "description": "d"}}, {}, "needs a type"),
        ({"x": {"type": "string", "default": "a"}}, {}, "needs a description"),
        ({"x": {"type": "array", "default": [], "description": "d"}}, {}, "without 'items'"),
        ({"x": {"type": "integer", "default": "2", "description": "d"}}, {}, "must be of type 'integer'"),
        ({"x": {"type": "string", "description": "d"}}, {}, "needs a default"),
        (
            {"x": {"type": "string", "secret": True, "default": "", "description": "d"}},
            {},
            "plaintext default",
        ),
        (GOOD, {"lookout:replicas": "3"}, "'replicas' must be of type 'integer'"),
        (GOOD, {"lookout:replicas": True}, "'replicas' must be of type 'integer'"),
        (GOOD, {"lookout:ranges": ["10.0.0.0/8", 7]}, "array<string>"),
        (GOOD, {"lookout:replica": 3}, "'replica' is not declared"),
        (GOOD, {"lookout:token": "plain"}, "must be set with --secret"),
        (GOOD, {}, "missing configuration value 'token'"),
    ],
)
def test_config_rules_of_the_cli_are_enforced(tmp_path: Path, config: dict, stack: dict, error: str):
    root = _project(tmp_path, config, stack)
    with pytest.raises(StackConfigError, match=re.escape(error)):
        stack_values("test", infra_dir=root)


def test_a_good_project_merges(tmp_path: Path):
    root = _project(
        tmp_path,
        GOOD,
        {"lookout:replicas": 3, "lookout:token": {"secure": "v1:abc"}, "kubernetes:context": "kind-lookout"},
    )
    assert stack_values("test", infra_dir=root, fake_secrets=True) == {
        "replicas": 3,
        "ranges": [],
        "token": stack_config.fake_secret("token"),
    }


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        ("250m", Decimal("0.25")),
        ("1", 1),
        ("1.5", Decimal("1.5")),
        ("768Mi", 768 * 2**20),
        ("2Gi", 2 * 2**30),
        ("1k", 1000),
        ("512M", 512 * 10**6),
    ],
)
def test_quantities_parse_like_kubernetes(quantity: str, value: Decimal):
    assert parse_quantity("q", quantity) == value


@pytest.mark.parametrize("quantity", ["250 m", "lots", "1.5.2Gi", "-1", "2gi", ""])
def test_a_bad_quantity_is_refused_naming_its_key(quantity: str):
    with pytest.raises(ConfigError, match=f"^memoryLimit: {re.escape(repr(quantity))} is not a Kubernetes"):
        parse_quantity("memoryLimit", quantity)


def test_the_reader_imports_neither_pulumi_nor_the_app():
    """The load tests read the stacks through it, without Pulumi or the app loaded."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, infra.stack_config; print(' '.join(sys.modules))"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert not [name for name in loaded if name.split(".")[0] in ("pulumi", "app")]
    assert "infra.stack_config" in loaded
