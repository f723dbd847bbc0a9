"""The notifier: the second service. It consumes the users service's events from RabbitMQ and
emails the people they concern, exactly once in effect, and answers what it sent at
``GET /api/v1/notifications``. Built from app/platform like the users service, importing nothing
else of the repository; its own settings (config.py), database and migrations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from apiflask import APIFlask

from .config import NotifierConfig, load_config

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def create_app(config: Mapping[str, Any] | NotifierConfig | None = None, *,
               tracer_provider: TracerProvider | None = None) -> APIFlask:
    """Build the notifier from ``config`` (tests) or the environment (real runs)."""
    from importlib.metadata import PackageNotFoundError, version

    from ..platform.database import set_up_sessions
    from ..platform.errors import register_database_outage, register_problem_handlers
    from ..platform.security import secure_responses
    from ..platform.telemetry import init_telemetry
    from . import api, cli
    from .extensions import MIGRATIONS, db, migrate
    from .metrics import NotifierMetrics
    from .tokens import Verifier

    if not isinstance(config, NotifierConfig):
        config = load_config(config, default_env="testing") if config is not None else load_config()
    app = APIFlask(__name__, title="Lookout Notifier API", version="1", docs_path="/docs",
                   spec_path="/openapi.json", static_folder=None)  # type: ignore[arg-type]
    app.config.from_mapping(config.flask_settings())
    app.extensions["notifier.settings"] = config
    app.security_schemes = {"BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    try:
        app.extensions["lookout.version"] = version("lookout")
    except PackageNotFoundError:
        app.extensions["lookout.version"] = "0+unknown"
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS, render_as_batch=True, compare_type=True)
    with app.app_context():
        engines = list(db.engines.values())
    for engine in engines:
        set_up_sessions(engine)
    init_telemetry(app, engines, tracer_provider, NotifierMetrics)
    app.extensions["notifier.verifier"] = Verifier(config)
    app.register_blueprint(api.bp)
    app.register_blueprint(api.api)
    register_problem_handlers(app)
    register_database_outage(app)
    secure_responses(app)  # the users service's headers; HSTS is a setting of the users service only
    cli.init_app(app)
    return app
