"""Read a stack's configuration from Pulumi.yaml and Pulumi.<stack>.yaml without the Pulumi CLI.

Usage:
    values = stack_values("prod")               # defaults merged with the stack's overrides
    values = stack_values("dev", fake_secrets=True)   # secrets replaced by stand-ins (mock runs)
    keys = schema()                              # every declared key: type, default, description
    cores = parse_quantity("cpuRequest", "250m")  # a Kubernetes quantity as a number: 0.25

The Pulumi CLI merges the project's defaults with a stack's overrides and checks their types
before it starts a program. The mock runtime (``make manifests``, the tests) and the load-test
capacity report run where there is no CLI, so this module does the same merge and the same
checks (types, undeclared keys, missing values, secrets stored encrypted), following the rules
of Pulumi's project config schema. Pulumi ships no Python API for it. It imports neither Pulumi
nor the app, so the load tests can read the stacks too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

INFRA_DIR = Path(__file__).resolve().parent
PROJECT_FILE = INFRA_DIR / "Pulumi.yaml"
TYPES = {"string": str, "integer": int, "boolean": bool, "array": list}
_MISSING: Any = object()
_SUFFIXES: dict[str, int | Decimal] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "m": Decimal("0.001"), "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|m|k|M|G|T|)$")


class StackConfigError(ValueError):
    """The project schema or a stack file breaks Pulumi's config rules; the message says where."""


class ConfigError(ValueError):
    """A config value is invalid; the message names the key."""


def parse_quantity(key: str, quantity: str) -> Decimal:
    """Return a Kubernetes quantity ("250m", "768Mi", "1") as a number of base units.

    Hand-written because the only library parser lives in the full ``kubernetes`` client, far
    too heavy a dependency for one regular expression.
    """
    match = _QUANTITY.match(quantity)
    if not match:
        raise ConfigError(f"{key}: {quantity!r} is not a Kubernetes quantity such as 250m or 768Mi")
    try:
        return Decimal(match.group(1)) * Decimal(_SUFFIXES[match.group(2)])
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise ConfigError(f"{key}: {quantity!r} is not a number") from None


@dataclass(frozen=True)
class ConfigKey:
    name: str
    type: str
    description: str
    default: Any = _MISSING
    secret: bool = False
    items: str | None = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def check(self, value: Any, where: str) -> None:
        """Raise unless ``value`` has the declared type (bool is no integer, as in Pulumi)."""
        ok = isinstance(value, TYPES[self.type]) and not (self.type == "integer" and isinstance(value, bool))
        if ok and self.type == "array":
            ok = all(isinstance(item, TYPES[self.items or "string"]) for item in value)
        if not ok:
            kind = f"array<{self.items}>" if self.type == "array" else self.type
            raise StackConfigError(f"{where}: '{self.name}' must be of type '{kind}', got {value!r}")


def project(project_file: Path = PROJECT_FILE) -> dict[str, Any]:
    return yaml.safe_load(project_file.read_text())


def schema(project_file: Path = PROJECT_FILE) -> dict[str, ConfigKey]:
    """Return the declared config keys, refusing declarations the CLI would refuse."""
    declared = project(project_file).get("config") or {}
    keys: dict[str, ConfigKey] = {}
    for name, decl in declared.items():
        where = f"{project_file.name}: config '{name}'"
        if not isinstance(decl, dict) or decl.get("type") not in TYPES:
            raise StackConfigError(f"{where} needs a type, one of {', '.join(TYPES)}")
        if not decl.get("description"):
            raise StackConfigError(f"{where} needs a description")
        if decl["type"] == "array" and not (decl.get("items") or {}).get("type"):
            raise StackConfigError(f"{where} declares an array without 'items'")
        key = ConfigKey(name=name, type=decl["type"], description=decl["description"],
                        default=decl.get("default", _MISSING), secret=bool(decl.get("secret")),
                        items=(decl.get("items") or {}).get("type"))
        if key.secret and not key.required:
            raise StackConfigError(f"{where} is secret: it must not have a plaintext default")
        if not key.secret and key.required:
            raise StackConfigError(f"{where} needs a default (only secrets are set per stack)")
        if not key.required:
            key.check(key.default, f"{project_file.name} default")
        keys[name] = key
    return keys


def stack_overrides(stack: str, infra_dir: Path = INFRA_DIR) -> dict[str, Any]:
    """Return the values ``Pulumi.<stack>.yaml`` sets, keyed without the project prefix."""
    path = infra_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise StackConfigError(f"no stack file {path.name}")
    name = project(infra_dir / "Pulumi.yaml")["name"]
    raw = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    overrides = {}
    for full_key, value in raw.items():
        namespace, _, key = full_key.rpartition(":")
        if namespace not in ("", name):
            continue  # provider settings such as kubernetes:context are the provider's business
        overrides[key] = value
    return overrides


def stack_values(stack: str, infra_dir: Path = INFRA_DIR, fake_secrets: bool = False) -> dict[str, Any]:
    """Merge defaults with the stack's overrides, checked as ``pulumi up`` checks them."""
    keys = schema(infra_dir / "Pulumi.yaml")
    overrides = stack_overrides(stack, infra_dir)
    where = f"Pulumi.{stack}.yaml"
    values: dict[str, Any] = {}
    for name, value in overrides.items():
        key = keys.get(name)
        if key is None:
            raise StackConfigError(f"{where}: '{name}' is not declared in Pulumi.yaml")
        encrypted = isinstance(value, dict) and set(value) == {"secure"}
        if key.secret and not encrypted:
            raise StackConfigError(f"{where}: '{name}' is secret and must be set with --secret")
        if encrypted:
            values[name] = fake_secret(name) if fake_secrets else value
            continue
        key.check(value, where)
        values[name] = value
    for name, key in keys.items():
        if name in values:
            continue
        if not key.required:
            values[name] = key.default
        elif key.secret and fake_secrets:
            values[name] = fake_secret(name)
        else:
            raise StackConfigError(f"Stack '{stack}' is missing configuration value '{name}'")
    return values


# The stand-in signing key of mock runs (the app refuses anything but an Ed25519 PEM there).
MOCK_JWT_PRIVATE_KEY = ("-----BEGIN PRIVATE KEY-----\n"
                        "MC4CAQAwBQYDK2VwBCIEIOnlbsQFxSKfJypY8OhTdWaM53Vxa90ssiU605y25PyQ\n"
                        "-----END PRIVATE KEY-----\n")


def fake_secret(name: str) -> str:
    """Return a stand-in for a secret in mock runs: long enough for the app's checks, obviously fake."""
    if name == "jwtPrivateKey":
        return MOCK_JWT_PRIVATE_KEY
    return f"mock-{name}-".ljust(48, "x")
