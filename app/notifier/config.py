"""The notifier's settings, validated when its app is created (app/platform/settings.py: the same
``LOOKOUT_ENV``, ``<SETTING>_FILE`` and error messages naming the setting as the users service).

SMTP_URL says how mail leaves, explicitly (never inferred from the port):
    smtps://host[:465]       implicit TLS (RFC 8314), the certificate verified
    smtp://host[:587]        STARTTLS required before anything else is sent, certificate verified
    smtp+plain://host[:25]   no TLS: a mail catcher on a private network; production refuses it
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from email.utils import parseaddr
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..platform.database import mysql_engine_options
from ..platform.settings import ConfigError, database_url, listen_address, load_settings

__all__ = ["CONFIGS", "ConfigError", "NotifierConfig", "load_config"]

SMTP_SCHEMES = {"smtps": 465, "smtp": 587, "smtp+plain": 25}
CONSUMER_TIMEOUT_SECONDS = 1800  # RabbitMQ's default consumer_timeout
SMTP_OPERATIONS = 8  # connect, EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT, DATA: each bounded by the timeout


class NotifierConfig(BaseModel):
    """Settings shared by every environment; subclasses change defaults only."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_default=True)
    ENV: ClassVar[str] = "base"

    SERVICE_NAME: str = Field(default="lookout-notifier",
                              description="Service name in traces (`service.name`) and metrics.")
    GIT_COMMIT: str = Field(default="unknown", description="Commit the code was built from.")
    DEBUG: bool = Field(default=False, description="Flask's debug mode.")
    TESTING: bool = Field(default=False, description="Flask's testing mode.")
    DATABASE_URL: str = Field(
        default="sqlite:///notifier.db",
        description="The notifier's own database: `sqlite:///...` (relative: in `instance/`), "
        "`postgresql://...` or `mysql://...`, never the users service's. Production: required.")
    DATABASE_CONNECT_TIMEOUT: int = Field(default=3, ge=1, le=60,
                                          description="Seconds a new database connection may take.")
    BROKER_URL: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/%2F",
        description="RabbitMQ `amqp://` or `amqps://` URL the events come from (may hold a password: use "
        "`_FILE`). Production: required.")
    BROKER_HEARTBEAT_SECONDS: int = Field(
        default=30, ge=1, le=600,
        description="AMQP heartbeat the consumer asks for; kept while an email is being sent.")
    PREFETCH_COUNT: int = Field(default=10, ge=1, le=1000,
                                description="Events handed to the consumer before it acknowledges any.")
    RETRY_DELAYS_SECONDS: tuple[float, ...] = Field(
        default=(5.0, 30.0, 120.0, 600.0),
        description="Comma-separated waits before each retry of a temporary failure (one retry queue per "
        "delay); after the last, the event goes to the dead-letter queue.")
    SMTP_URL: str = Field(
        default="smtp+plain://127.0.0.1:1025",
        description="`smtps://host[:465]` (implicit TLS), `smtp://host[:587]` (STARTTLS required) or "
        "`smtp+plain://host[:25]` (no TLS, refused in production).")
    SMTP_USERNAME: str | None = Field(default=None,
                                      description="SMTP user (`_FILE` allowed); unset: no AUTH.")
    SMTP_PASSWORD: str | None = Field(default=None,
                                      description="SMTP password; give it as `SMTP_PASSWORD_FILE`.")
    SMTP_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=120,
                                        description="Seconds each SMTP operation may take.")
    MAIL_FROM: str = Field(default="Lookout <no-reply@lookout.localhost>",
                           description="Sender address of every email, `Name <address>` or `address`.")
    MAIL_SERVICE_NAME: str = Field(default="Lookout", description="Service name written in the emails.")
    MAIL_SUPPORT: str = Field(default="your administrator",
                              description="Who to contact when a change was not made by the user.")
    JWKS_URL: str = Field(
        default="http://127.0.0.1:8000/.well-known/jwks.json",
        description="The users service's public keys (`/.well-known/jwks.json`) tokens are verified with.")
    JWKS_TIMEOUT_SECONDS: float = Field(default=2.0, gt=0, le=30,
                                        description="Seconds a JWKS fetch may take.")
    JWKS_CACHE_SECONDS: float = Field(
        default=300.0, gt=0, description="Seconds fetched keys are used before they are fetched again.")
    JWKS_REFETCH_COOLDOWN_SECONDS: float = Field(
        default=30.0, ge=0, description="Least seconds between two fetches caused by an unknown `kid`.")
    JWT_ISSUER: str = Field(default="lookout", description="`iss` tokens must carry.")
    JWT_AUDIENCE: str = Field(default="lookout-api", description="`aud` tokens must carry.")
    JWT_LEEWAY_SECONDS: int = Field(default=10, ge=0, le=300,
                                    description="Clock skew allowed on `exp`, `iat`.")
    PAGE_SIZE: int = Field(default=20, ge=1, le=100, description="Notifications per page.")
    READINESS_TIMEOUT_SECONDS: float = Field(default=1.0, gt=0, le=30,
                                             description="`/readyz` answers within this many seconds.")
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level of the JSON log lines.")
    TELEMETRY_ENABLED: bool = Field(default=True, description="Metrics and traces.")
    METRICS_PORT: int | None = Field(
        default=None, ge=1, le=65535,
        description="Web: a second listener that alone serves `/metrics`; unset: on the main port.")
    CONSUMER_METRICS_PORT: int = Field(default=9102, ge=0, le=65535,
                                       description="Port of the consumer's `/metrics`; 0: not served.")
    CONSUMER_METRICS_ADDRESS: str = Field(
        default="0.0.0.0",  # noqa: S104  # nosec B104 # a pod's metrics port is scraped from outside
        description="IP address the consumer's metrics listener binds (`127.0.0.1`: this host only).")
    MAX_CONTENT_LENGTH: int = Field(default=64 * 1024, ge=1024, description="Largest request body.")

    @field_validator("DATABASE_URL")
    @classmethod
    def _use_psycopg3(cls, url: str) -> str:
        return database_url(url)

    @field_validator("BROKER_URL")
    @classmethod
    def _amqp(cls, url: str) -> str:
        if not re.match(r"amqps?://[^/]+", url):
            raise ValueError("must be an amqp:// or amqps:// URL")
        return url

    @field_validator("CONSUMER_METRICS_ADDRESS")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        return listen_address(value)

    @field_validator("RETRY_DELAYS_SECONDS", mode="before")
    @classmethod
    def _delays(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = tuple(float(v) for v in value.split(",") if v.strip())
            except ValueError:
                raise ValueError(f"{value!r} is not comma-separated seconds such as 5,30,120") from None
        if not value or any(v <= 0 for v in value):
            raise ValueError("needs at least one delay, each above 0 seconds")
        return tuple(value)

    @field_validator("SMTP_URL")
    @classmethod
    def _smtp(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in SMTP_SCHEMES:
            raise ValueError("must start with smtps:// (implicit TLS), smtp:// (STARTTLS) or smtp+plain:// "
                             "(no TLS)")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        if not parts.hostname or port == 0:
            raise ValueError("needs a host, e.g. smtps://mail.example.com:465")
        if parts.username or parts.password:
            raise ValueError("must not hold credentials; use SMTP_USERNAME and SMTP_PASSWORD_FILE")
        return url

    @field_validator("MAIL_FROM")
    @classmethod
    def _address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if not re.fullmatch(r"[^@\s<>]+@[A-Za-z0-9.-]+", address or ""):
            raise ValueError(f"{value!r} is not an email address such as 'Lookout <no-reply@example.com>'")
        return value

    @field_validator("JWKS_URL")
    @classmethod
    def _jwks(cls, url: str) -> str:
        if not re.match(r"https?://[^/]+/", url):
            raise ValueError("must be an http(s) URL of the users service's /.well-known/jwks.json")
        return url

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> NotifierConfig:
        if (self.SMTP_USERNAME is None) != (self.SMTP_PASSWORD is None):
            raise ValueError("SMTP_USERNAME and SMTP_PASSWORD are set together or not at all")
        if self.SMTP_USERNAME is not None and self.smtp_scheme == "smtp+plain":
            raise ValueError("SMTP_URL: smtp+plain:// would send SMTP_PASSWORD unencrypted; use smtps:// "
                             "or smtp://")
        return self

    @model_validator(mode="after")
    def _acknowledged_in_time(self) -> NotifierConfig:
        """The last of PREFETCH_COUNT deliveries must be acknowledged before RabbitMQ's
        consumer_timeout (30 min by default) closes the channel and redelivers them all: a send
        takes at most SMTP_OPERATIONS operations of SMTP_TIMEOUT_SECONDS each."""
        worst = self.PREFETCH_COUNT * self.SMTP_TIMEOUT_SECONDS * SMTP_OPERATIONS
        if worst >= CONSUMER_TIMEOUT_SECONDS:
            raise ValueError(f"PREFETCH_COUNT x SMTP_TIMEOUT_SECONDS x {SMTP_OPERATIONS} is {worst:g} s, "
                             f"not below RabbitMQ's consumer_timeout ({CONSUMER_TIMEOUT_SECONDS} s): "
                             "lower either")
        return self

    @property
    def smtp_scheme(self) -> str:
        return urlsplit(self.SMTP_URL).scheme

    @property
    def smtp_host(self) -> str:
        return urlsplit(self.SMTP_URL).hostname or ""

    @property
    def smtp_port(self) -> int:
        return urlsplit(self.SMTP_URL).port or SMTP_SCHEMES[self.smtp_scheme]

    def flask_settings(self) -> dict[str, Any]:
        uri = self.DATABASE_URL
        options: dict[str, Any] = {"hide_parameters": True,
                                   "connect_args": {"timeout": self.DATABASE_CONNECT_TIMEOUT}}
        if uri.startswith("mysql+"):
            options = mysql_engine_options(connect_timeout=self.DATABASE_CONNECT_TIMEOUT)
        elif not uri.startswith("sqlite:"):
            options = {"hide_parameters": True, "pool_pre_ping": True,
                       "connect_args": {"connect_timeout": self.DATABASE_CONNECT_TIMEOUT}}
        return {"LOOKOUT_ENV": self.ENV, **self.model_dump(), "SQLALCHEMY_DATABASE_URI": uri,
                "SQLALCHEMY_ENGINE_OPTIONS": options, "OPENAPI_VERSION": "3.0.3",
                "AUTO_SERVERS": False}


class DevelopmentConfig(NotifierConfig):
    ENV: ClassVar[str] = "development"
    DEBUG: bool = True


class TestingConfig(NotifierConfig):
    ENV: ClassVar[str] = "testing"
    TESTING: bool = True
    DATABASE_URL: str = "sqlite://"
    CONSUMER_METRICS_PORT: int = 0


class ProductionConfig(NotifierConfig):
    ENV: ClassVar[str] = "production"
    DATABASE_URL: str = ""
    BROKER_URL: str = ""

    @field_validator("DATABASE_URL", "BROKER_URL", mode="before")
    @classmethod
    def _required(cls, value: str) -> str:
        if not value:
            raise ValueError("is missing; production needs it set explicitly")
        return value

    @field_validator("SMTP_URL")
    @classmethod
    def _tls(cls, url: str) -> str:
        if url.startswith("smtp+plain:"):
            raise ValueError("smtp+plain:// sends mail unencrypted; production needs smtps:// or smtp://")
        return url


CONFIGS: dict[str, type[NotifierConfig]] = {
    c.ENV: c for c in (DevelopmentConfig, TestingConfig, ProductionConfig)}


def load_config(environ: Mapping[str, Any] | None = None, default_env: str = "production") -> NotifierConfig:
    """The notifier's settings for the environment ``LOOKOUT_ENV`` names in ``environ``."""
    return load_settings(os.environ if environ is None else environ, CONFIGS, default_env)
