"""How a settings group declares its config keys, reads them and checks them.

Usage:
    @dataclass(frozen=True)
    class DatabaseSettings(Group):
        mode: Annotated[str, Key("databaseMode", one_of=("external", "incluster"))]
        instances: Annotated[int, Key("databaseInstances", at_least=1)]

    DatabaseSettings.read(pulumi.Config())   # each field from its key, by the field's type

A field's type says how its key is read: ``str``, ``int``, ``bool``, ``tuple[str, ...]`` (an
array), ``pulumi.Output[str]`` (a secret, still encrypted) or ``pulumi.Output[str] | None`` (a
secret that may be unset). Pulumi.yaml declares each key's type and default and the CLI applies
them before the program starts, so reading only ``require``s; the checks here cover what no
schema can express, and every message starts with the key.
"""

from __future__ import annotations

import ipaddress
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Self
from urllib.parse import urlsplit

import pulumi
from limits import parse_many
from marshmallow import ValidationError
from marshmallow.validate import Email

from dashboards import alert_names, duration_seconds
from infra.stack_config import ConfigError, parse_quantity

Check = Callable[[str, Any], None]  # (key, value); raises ConfigError
_DURATION = re.compile(r"^([0-9]+[hms])+$")


@dataclass(frozen=True)
class Key:
    """The config key a field is read from, and the checks its value must pass."""

    name: str
    one_of: tuple[str, ...] = ()
    at_least: int | None = None
    check: Check | None = None

    def validate(self, value: Any) -> None:
        if self.one_of:
            one_of(self.name, value, *self.one_of)
        if self.at_least is not None and value < self.at_least:
            raise ConfigError(f"{self.name} must be at least {self.at_least}, got {value}")
        if self.check:
            self.check(self.name, value)


class Group:
    """Base of a frozen settings dataclass whose fields are ``Annotated[type, Key(...)]``."""

    @classmethod
    def keys(cls) -> dict[str, tuple[Any, Key]]:
        """Return each field's type and Key."""
        hints = typing.get_type_hints(cls, include_extras=True)
        return {f.name: typing.get_args(hints[f.name])[:2] for f in fields(cls)}

    @classmethod
    def read(cls, config: pulumi.Config) -> Self:
        """Read every field from its key, as its type says."""
        return cls(**{name: _read(config, key.name, kind) for name, (kind, key) in cls.keys().items()})

    def __post_init__(self) -> None:
        for name, (_, key) in self.keys().items():
            key.validate(getattr(self, name))
        self.check()

    def check(self) -> None:
        """Check the rules that tie the group's keys together (none unless a group adds them)."""


def _read(c: pulumi.Config, name: str, kind: Any) -> Any:
    if kind is str:
        return c.require(name)
    if kind is int:
        return c.require_int(name)
    if kind is bool:
        return c.require_bool(name)
    if kind == tuple[str, ...]:
        return tuple(c.require_object(name))
    # require_secret keeps a secret encrypted in state; require() would store plaintext (pulumi#18866).
    if kind == pulumi.Output[str]:
        return c.require_secret(name)
    if kind == pulumi.Output[str] | None:
        return c.require_secret(name) if c.get(name) else None  # get() asks only whether it is set
    raise TypeError(f"{name}: no config reader for a field of type {kind}")


def one_of(name: str, value: str, *allowed: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")


def quantity(name: str, value: str) -> None:
    parse_quantity(name, value)


def quantity_or_empty(name: str, value: str) -> None:
    if value:
        parse_quantity(name, value)


def url_or_empty(name: str, value: str) -> None:
    """An http:// or https:// URL with a host, or nothing."""
    if not value:
        return
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host, got {value!r}")


def cidrs(name: str, ranges: tuple[str, ...]) -> None:
    for cidr in ranges:
        try:
            ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None


def email(name: str, value: str) -> None:
    """The validator of the app's own email fields (marshmallow's), so the Job does not refuse it later."""
    try:
        Email()(value)
    except ValidationError:
        raise ConfigError(f"{name}: {value!r} is not an email address") from None


def ratio(name: str, value: str) -> None:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 1:
        raise ConfigError(f"{name}: {value!r} is not between 0 and 1")


def percentage(name: str, value: int) -> None:
    if not 1 <= value <= 100:
        raise ConfigError(f"{name} must be a percentage between 1 and 100")


def rate_limit(name: str, value: str) -> None:
    """Parse a limit with the parser of the app's Flask-Limiter ("30 per minute", "5/second;100/hour")."""
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a rate limit such as '10 per minute'") from None


def duration_or_empty(name: str, value: str) -> None:
    if value and not _DURATION.match(value):
        raise ConfigError(f"{name}: {value!r} is not a duration such as 10m or 1h30m")


def prometheus_duration(name: str, value: str) -> None:
    try:
        duration_seconds(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a Prometheus duration such as 15d or 12h") from None


def alert_name(name: str, names: tuple[str, ...]) -> None:
    """A misspelt alert name would mute nothing, silently."""
    if names:
        known = sorted(set(alert_names()))  # reads the rule files: once, and only when needed
        for alert in names:
            one_of(name, alert, *known)
