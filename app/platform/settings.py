"""How every service reads its settings: a pydantic model per environment, filled from a
mapping (the process environment in real runs, a dict in tests), where ``<SETTING>_FILE`` names
a file holding the value (Kubernetes/Docker secrets as files), and a bad value fails at start
with a ``ConfigError`` naming the setting.

Plain pydantic models are used rather than pydantic-settings because pydantic-settings always
merges the process environment, and tests must be able to build an app from a mapping alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ENV_VAR = "LOOKOUT_ENV"
Settings = TypeVar("Settings", bound=BaseModel)


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message names the setting."""


def listen_address(value: str) -> str:
    """A listener's bind address: an IPv4 or IPv6 literal (``0.0.0.0``, ``127.0.0.1``, ``::``).

    A host name is refused rather than resolved: what it resolves to can change under a running
    pod, and a typo would otherwise surface only as a bind error after the process started."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address such as 0.0.0.0 or 127.0.0.1") from None


def database_url(url: str) -> str:
    """A ``sqlite:``, PostgreSQL or MySQL/MariaDB URL, mapped to its driver: ``postgres://`` and
    ``postgresql://`` to psycopg 3, ``mysql://`` and ``mariadb://`` to PyMySQL.

    MySQL and MariaDB share SQLAlchemy's ``mysql`` dialect, which tells them apart from the
    server's version; the ``mariadb`` dialect would refuse a MySQL server behind a mariadb:// URL.
    """
    for prefixes, driver in ((("postgres://", "postgresql://"), "postgresql+psycopg://"),
                             (("mysql://", "mariadb://", "mariadb+pymysql://"), "mysql+pymysql://")):
        for prefix in prefixes:
            if url.startswith(prefix):
                return driver + url[len(prefix):]
    if not url.startswith(("sqlite:", "postgresql+psycopg:", "mysql+pymysql:")):
        raise ValueError("must be a sqlite://, postgresql:// or mysql:// (mariadb://) URL")
    return url


def values_from(environ: Mapping[str, Any], cls: type[BaseModel]) -> dict[str, Any]:
    """Pick the class's fields from ``environ``, reading ``<NAME>_FILE`` when it is set."""
    values: dict[str, Any] = {}
    for name in cls.model_fields:
        file_var = f"{name}_FILE"
        if file_var in environ:
            try:
                values[name] = Path(environ[file_var]).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{file_var}: cannot read {environ[file_var]!r}: {exc.strerror}") from exc
        elif name in environ:
            values[name] = environ[name]
    return values


def select(environ: Mapping[str, Any], classes: Mapping[str, type[Settings]],
           default_env: str) -> tuple[str, type[Settings]]:
    """The environment named by ``LOOKOUT_ENV`` in ``environ`` and its settings class."""
    env = str(environ.get(ENV_VAR, default_env)).strip().lower()
    cls = classes.get(env)
    if cls is None:
        raise ConfigError(f"{ENV_VAR}: {env!r} is not one of {', '.join(classes)}")
    return env, cls


def build(cls: type[Settings], environ: Mapping[str, Any], env: str) -> Settings:
    """Validate ``cls`` from ``environ``; a ConfigError names every bad setting."""
    try:
        return cls.model_validate(values_from(environ, cls))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration for {ENV_VAR}={env}: {problems}") from None


def load_settings(environ: Mapping[str, Any], classes: Mapping[str, type[Settings]],
                  default_env: str = "production") -> Settings:
    """Build the settings of the environment ``LOOKOUT_ENV`` names in ``environ``."""
    env, cls = select(environ, classes, default_env)
    return build(cls, environ, env)
