"""The notifier refuses a bad setting at start, with a message naming it."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from app.notifier import create_app
from app.notifier.config import ConfigError, load_config

PRODUCTION = {"LOOKOUT_ENV": "production", "DATABASE_URL": "postgresql://db/notifier",
              "BROKER_URL": "amqps://mq.example.com/", "SMTP_URL": "smtps://mail.example.com",
              "MAIL_FROM": "Lookout <no-reply@example.com>"}


def test_production_settings_load():
    settings = load_config(PRODUCTION)
    smtp = (settings.smtp_scheme, settings.smtp_host, settings.smtp_port)
    assert smtp == ("smtps", "mail.example.com", 465)
    assert load_config({**PRODUCTION, "SMTP_URL": "smtp://mail.example.com"}).smtp_port == 587


@pytest.mark.parametrize("changes, named", [
    ({"SMTP_URL": "http://mail.example.com"}, "SMTP_URL: must start with smtps://"),
    ({"SMTP_URL": "smtps://"}, "SMTP_URL: needs a host"),
    ({"SMTP_URL": "smtps://user:pw@mail.example.com"}, "SMTP_URL: must not hold credentials"),
    ({"SMTP_URL": "smtp+plain://mail.example.com"}, "SMTP_URL: smtp+plain:// sends mail unencrypted"),
    ({"MAIL_FROM": "nobody"}, "MAIL_FROM: 'nobody' is not an email address"),
    ({"SMTP_USERNAME": "mailer"}, "SMTP_USERNAME and SMTP_PASSWORD are set together"),
    ({"DATABASE_URL": ""}, "DATABASE_URL: is missing"),
    ({"BROKER_URL": ""}, "BROKER_URL: is missing"),
    ({"BROKER_URL": "redis://x"}, "BROKER_URL: must be an amqp://"),
    ({"RETRY_DELAYS_SECONDS": "5,soon"}, "RETRY_DELAYS_SECONDS: '5,soon' is not comma-separated seconds"),
    ({"RETRY_DELAYS_SECONDS": "0"}, "RETRY_DELAYS_SECONDS: needs at least one delay"),
    ({"JWKS_URL": "ftp://users/jwks"}, "JWKS_URL: must be an http(s) URL"),
    ({"SMTP_TIMEOUT_SECONDS": "0"}, "SMTP_TIMEOUT_SECONDS"),
    ({"PREFETCH_COUNT": "100", "SMTP_TIMEOUT_SECONDS": "30"}, "not below RabbitMQ's consumer_timeout"),
    ({"CONSUMER_METRICS_ADDRESS": "localhost"}, "CONSUMER_METRICS_ADDRESS: 'localhost' is not an IP address"),
    ({"CONSUMER_METRICS_ADDRESS": "127.0.0.256"}, "CONSUMER_METRICS_ADDRESS: '127.0.0.256' is not an IP"),
])
def test_a_bad_setting_fails_at_start_naming_it(changes, named):
    with pytest.raises(ConfigError) as error:
        create_app({**PRODUCTION, **changes})
    assert named in str(error.value)


def test_the_consumer_metrics_listener_binds_the_configured_address():
    from prometheus_client import CollectorRegistry, Counter

    from app.notifier.cli import serve_metrics

    registry = CollectorRegistry()
    Counter("probe", "A metric the listener must serve.", registry=registry).inc()
    development = {"LOOKOUT_ENV": "development", "CONSUMER_METRICS_ADDRESS": "127.0.0.1"}
    app = create_app({**development, "CONSUMER_METRICS_PORT": str(free_port())})
    server = serve_metrics(app, registry)
    try:
        assert server.server_address[0] == "127.0.0.1"
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"probe_total 1.0" in response.read()
    finally:
        server.shutdown()
        server.server_close()
    assert create_app(development).config["CONSUMER_METRICS_ADDRESS"] == "127.0.0.1"
    assert load_config({**development, "CONSUMER_METRICS_ADDRESS": "::"}).CONSUMER_METRICS_ADDRESS == "::"
    assert serve_metrics(create_app({**development, "CONSUMER_METRICS_PORT": "0"}), registry) is None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_plain_smtp_would_send_the_password_in_clear():
    with pytest.raises(ConfigError, match="smtp\\+plain:// would send SMTP_PASSWORD unencrypted"):
        load_config({"LOOKOUT_ENV": "development", "SMTP_URL": "smtp+plain://mailpit:1025",
                     "SMTP_USERNAME": "u", "SMTP_PASSWORD": "p"})


def test_credentials_come_from_files(tmp_path):
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    settings = load_config({**PRODUCTION, "SMTP_USERNAME": "mailer", "SMTP_PASSWORD_FILE": str(secret)})
    assert settings.SMTP_PASSWORD == "s3cret"
    with pytest.raises(ConfigError, match="SMTP_PASSWORD_FILE: cannot read"):
        load_config({**PRODUCTION, "SMTP_USERNAME": "mailer", "SMTP_PASSWORD_FILE": str(tmp_path / "none")})


# --- the README's settings table ----------------------------------------------------------------------

NOTIFIER_README = Path(__file__).resolve().parents[1] / "app" / "notifier" / "README.md"
MARKERS = ("<!-- notifier-settings:start -->", "<!-- notifier-settings:end -->")


def notifier_table() -> str:
    from app.notifier.config import CONFIGS, NotifierConfig
    from app.settings_table import settings_table

    return settings_table(NotifierConfig, CONFIGS)  # type: ignore[arg-type]  # same shape of settings


def test_the_readme_table_matches_the_settings():
    text = NOTIFIER_README.read_text()
    table = text.partition(MARKERS[0])[2].partition(MARKERS[1])[0].strip()
    assert table == notifier_table(), "run: PYTHONPATH=. .venv/bin/python tests/test_notifier_config.py"


if __name__ == "__main__":
    from app.settings_table import replace_marked

    changed = replace_marked(NOTIFIER_README, *MARKERS, notifier_table())
    print(NOTIFIER_README, "updated" if changed else "unchanged")


def test_a_mysql_database_gets_the_same_connection_settings_as_the_users_service():
    """utf8mb4 with the binary collation, strict mode, READ COMMITTED, recycling below the
    session's wait_timeout: app/platform/database.py, shared by both services."""
    from app.platform.database import MYSQL_POOL_RECYCLE, MYSQL_WAIT_TIMEOUT

    config = load_config({**PRODUCTION, "DATABASE_URL": "mariadb://n@db/notifier",
                          "DATABASE_CONNECT_TIMEOUT": "2"})
    options = config.flask_settings()["SQLALCHEMY_ENGINE_OPTIONS"]
    assert config.DATABASE_URL == "mysql+pymysql://n@db/notifier"
    assert options["isolation_level"] == "READ COMMITTED" and options["pool_pre_ping"] is True
    assert options["pool_recycle"] == MYSQL_POOL_RECYCLE < MYSQL_WAIT_TIMEOUT
    args = options["connect_args"]
    assert (args["charset"], args["collation"], args["sql_mode"], args["connect_timeout"]) == (
        "utf8mb4", "utf8mb4_bin", "TRADITIONAL", 2)
