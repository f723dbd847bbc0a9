"""Lookout: the users service, built by ``create_app``."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from apiflask import APIFlask

from .config import Config, load_config
from .docs import LookoutAPI

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

def create_app(config: Mapping[str, Any] | Config | None = None, *,
               tracer_provider: TracerProvider | None = None) -> APIFlask:
    """Build the app from ``config`` (tests) or from the environment (real runs).

    ``tracer_provider`` replaces the one built from OTEL_* settings (tests pass one with an
    in-memory exporter).
    """
    if not isinstance(config, Config):
        config = load_config(config, default_env="testing") if config is not None else load_config()
    app = LookoutAPI(__name__, title="Lookout Users API", version=_version(), docs_path="/docs",
                   spec_path="/openapi.json", static_folder=None)  # type: ignore[arg-type]  # Flask takes None
    app.config.from_mapping(config.flask_settings())
    app.extensions["lookout.version"] = _version()
    register_extensions(app, tracer_provider)
    register_blueprints(app)
    register_errorhandlers(app)
    return app


def register_extensions(app: APIFlask, tracer_provider: TracerProvider | None = None) -> None:
    from . import breaker, cache, cli, database, docs, guards, ratelimit, relay, security, telemetry
    from .auth import passwords, tokens
    from .extensions import MIGRATIONS, db, migrate, render_item

    guards.init_app(app)
    db.init_app(app)
    database.init_app(app)
    breaker.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS, render_as_batch=True, compare_type=True,
                     render_item=render_item)
    telemetry.init_app(app, tracer_provider)
    cache.init_app(app)
    passwords.init_app(app)
    tokens.init_app(app)
    ratelimit.init_app(app)
    security.init_app(app)
    docs.init_app(app)
    cli.init_app(app)
    relay.init_app(app)


def register_blueprints(app: APIFlask) -> None:
    from . import api, auth, health, main

    for module in (main, health, auth, api):
        app.register_blueprint(module.bp)
    if app.config["FAULT_INJECTION"]:  # tests only; production settings refuse it
        from . import faults

        app.register_blueprint(faults.bp)


def register_errorhandlers(app: APIFlask) -> None:
    from .errors import register_errorhandlers as register

    register(app)


def _version() -> str:
    try:
        return version("lookout")
    except PackageNotFoundError:
        return "0+unknown"
