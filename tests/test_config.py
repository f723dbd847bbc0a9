"""Settings: environment selection, overrides, secret files and production refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.config import (
    DEV_JWT_KEY_ID,
    DEV_JWT_PRIVATE_KEY,
    DEV_SECRET,
    ConfigError,
    DevelopmentConfig,
    ProductionConfig,
    load_config,
)
from app.config import TestingConfig as _TestingConfig
from loadtests.harness import PRODUCTION_SECRETS

STRONG = "s" * 40
JWT_KEY = {"JWT_PRIVATE_KEY": PRODUCTION_SECRETS["JWT_PRIVATE_KEY"], "JWT_KEY_ID": "k1"}
PROD_OK = {"LOOKOUT_ENV": "production", "SECRET_KEY": STRONG, **JWT_KEY,
           "DATABASE_URL": "postgresql://db.internal/lookout"}


@pytest.mark.parametrize("env, cls", [("development", DevelopmentConfig), ("testing", _TestingConfig),
                                      ("production", ProductionConfig), (" Development ", DevelopmentConfig)])
def test_env_var_selects_the_class(env, cls):
    values = {**PROD_OK, "LOOKOUT_ENV": env} if cls is ProductionConfig else {"LOOKOUT_ENV": env}
    assert type(load_config(values)) is cls


def test_unset_env_fails_closed_to_production():
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_config({})


def test_unknown_env_is_named():
    with pytest.raises(ConfigError, match="LOOKOUT_ENV: 'staging' is not one of"):
        load_config({"LOOKOUT_ENV": "staging"})


def test_every_setting_is_overridable_and_typed():
    config = load_config({"LOOKOUT_ENV": "development", "MAX_CONTENT_LENGTH": "4096",
                          "DEBUG": "false", "JWT_TTL_SECONDS": "60"})
    assert config.MAX_CONTENT_LENGTH == 4096 and config.DEBUG is False and config.JWT_TTL_SECONDS == 60


@pytest.mark.parametrize("name, value", [("MAX_CONTENT_LENGTH", "lots"), ("DEBUG", "perhaps"),
                                         ("JWT_PRIVATE_KEY", "not a key"), ("JWT_KEY_ID", "a b"),
                                         ("JWT_EXTRA_PUBLIC_KEYS", "[]"),
                                         ("BROKER_URL", "http://rabbit:5672"),
                                         ("PAGE_SIZE_MAX", "0"), ("DATABASE_URL", "oracle://x/y"),
                                         ("PUBLIC_URL", "api.example.com"), ("PUBLIC_URL", "ftp://x.example"),
                                         ("PUBLIC_URL", "https://x.example/a?b=c"),
                                         ("RATE_LIMIT_READS", "many"), ("PROXY_TRUSTED_HOPS", "3"),
                                         ("PROXY_TRUSTED_HOPS", "-1"), ("PROXY_TRUSTED_HOPS", "one"),
                                         ("PROXY_TRUSTED_ADDRESSES", "10.0.0.0/33"),
                                         ("PROXY_TRUSTED_ADDRESSES", "10.0.0.0/8,gateway"),
                                         ("RELAY_METRICS_ADDRESS", "localhost"),
                                         ("RELAY_METRICS_ADDRESS", "")])
def test_bad_value_names_the_setting(name, value):
    with pytest.raises(ConfigError, match=f"{name}: "):
        load_config({"LOOKOUT_ENV": "development", name: value})


@pytest.mark.parametrize("name, value, reason", [
    ("SECRET_KEY", None, "missing"),
    ("SECRET_KEY", DEV_SECRET, "known default"),
    ("SECRET_KEY", "changeme", "known default"),
    ("SECRET_KEY", "short", "at least 32"),
    ("JWT_PRIVATE_KEY", None, "missing"),
    ("JWT_PRIVATE_KEY", DEV_JWT_PRIVATE_KEY, "development key"),
    ("JWT_KEY_ID", None, "missing"),
    ("JWT_KEY_ID", DEV_JWT_KEY_ID, "missing"),
    ("DATABASE_URL", None, "missing"),
    ("DATABASE_URL", "", "missing"),
    ("DATABASE_URL", "sqlite:///lookout.db", "missing"),
])
def test_production_refuses_weak_or_missing_settings(name, value, reason):
    values = {k: v for k, v in PROD_OK.items() if k != name}
    if value is not None:
        values[name] = value
    with pytest.raises(ConfigError, match=rf"{name}: .*{reason}"):
        load_config(values)


@pytest.mark.parametrize("value, stored", [("https://api.example.com", "https://api.example.com"),
                                           ("http://127.0.0.1:8000/lookout/", "http://127.0.0.1:8000/lookout")])
def test_public_url_is_an_http_url_without_trailing_slash(value, stored):
    assert load_config({"LOOKOUT_ENV": "development", "PUBLIC_URL": value}).PUBLIC_URL == stored


def test_production_accepts_good_settings_and_picks_psycopg():
    config = load_config(PROD_OK)
    assert config.DATABASE_URL == "postgresql+psycopg://db.internal/lookout"
    assert config.DEBUG is False


@pytest.mark.parametrize(("url", "mapped"), [
    ("mysql://u:p@db.internal:3306/lookout", "mysql+pymysql://u:p@db.internal:3306/lookout"),
    ("mariadb://u@db.internal/lookout", "mysql+pymysql://u@db.internal/lookout"),
    ("mariadb+pymysql://u@db.internal/lookout", "mysql+pymysql://u@db.internal/lookout"),
    ("mysql+pymysql://u@db.internal/lookout", "mysql+pymysql://u@db.internal/lookout"),
])
def test_mysql_and_mariadb_urls_pick_pymysql(url, mapped):
    """One dialect for both: SQLAlchemy tells MariaDB from MySQL by the server's version."""
    assert load_config({**PROD_OK, "DATABASE_URL": url}).DATABASE_URL == mapped


def test_a_mysql_driver_other_than_pymysql_is_refused():
    with pytest.raises(ConfigError, match="DATABASE_URL: must be a sqlite://, postgresql:// or mysql://"):
        load_config({**PROD_OK, "DATABASE_URL": "mysql+mysqldb://u@db.internal/lookout"})


def test_secret_from_file(tmp_path: Path):
    (tmp_path / "key").write_text(STRONG + "\n")
    values = {**PROD_OK, "SECRET_KEY_FILE": str(tmp_path / "key")}
    del values["SECRET_KEY"]
    assert load_config(values).SECRET_KEY == STRONG


def test_unreadable_secret_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="SECRET_KEY_FILE: cannot read"):
        load_config({**PROD_OK, "SECRET_KEY_FILE": str(tmp_path / "missing")})


def test_create_app_reads_the_environment_only_without_a_mapping(monkeypatch):
    monkeypatch.setenv("LOOKOUT_ENV", "development")
    monkeypatch.setenv("DATABASE_URL", "sqlite:////tmp/from-env.db")
    assert create_app().config["SQLALCHEMY_DATABASE_URI"] == "sqlite:////tmp/from-env.db"
    tested = create_app({"DATABASE_URL": "sqlite://"})
    assert tested.config["SQLALCHEMY_DATABASE_URI"] == "sqlite://" and tested.testing


def _gunicorn_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run gunicorn's --check-config with our config module, as the container would."""
    return subprocess.run([sys.executable, "-m", "gunicorn", "--check-config",
                           "-c", "python:app.gunicorn_conf",
                           "app.wsgi:app"], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1])


def test_server_refuses_to_start_with_bad_app_config():
    result = _gunicorn_check({"LOOKOUT_ENV": "production", **JWT_KEY,
                              "DATABASE_URL": "postgresql://db/x"})
    assert result.returncode != 0
    assert "SECRET_KEY: is missing or a known default" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_refuses_bad_server_setting():
    result = _gunicorn_check({"LOOKOUT_ENV": "development", "GUNICORN_WORKERS": "many"})
    assert result.returncode != 0
    assert "GUNICORN_WORKERS" in result.stderr and "Traceback" not in result.stderr


def test_server_refuses_a_gc_freeze_setting_that_is_not_a_boolean():
    result = _gunicorn_check({"LOOKOUT_ENV": "development", "GUNICORN_GC_FREEZE": "sometimes"})
    assert result.returncode != 0
    assert "GUNICORN_GC_FREEZE" in result.stderr and "Traceback" not in result.stderr


def test_server_config_passes_when_valid():
    result = _gunicorn_check({"LOOKOUT_ENV": "development"})
    assert result.returncode == 0, result.stderr
