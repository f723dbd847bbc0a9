"""Settings for every environment, validated when the app is created.

Usage:
    settings = load_config(os.environ)        # real runs
    settings = load_config({"DATABASE_URL": "sqlite://"}, default_env="testing")  # tests

Environment variables read (all optional except where production requires them):
    LOOKOUT_ENV        development | testing | production (default: production, so a
                       forgotten variable fails closed instead of running with dev secrets)
    <SETTING>          any field of the selected class below, e.g. DATABASE_URL, SECRET_KEY
    <SETTING>_FILE     path of a file holding the value (Kubernetes/Docker secrets as files)

The loading mechanics (``_FILE``, ConfigError, the message naming the setting) are shared with
the other services: app/platform/settings.py.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .platform.database import mysql_engine_options
from .platform.settings import ENV_VAR, ConfigError, database_url, listen_address, load_settings

__all__ = ["CONFIGS", "ENV_VAR", "Config", "ConfigError", "load_config"]

DEV_SECRET = "dev-secret-key-not-for-production"  # noqa: S105  # nosec B105 # refused in production
# The development Ed25519 signing key: fixed, so tokens survive a restart of `make run`, and
# refused in production like DEV_SECRET.
DEV_JWT_PRIVATE_KEY = (  # refused in production
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIFaP6IBVYf/edUYITjagh+V23Zm5r0GoBXuFvNuq8EoY\n"
    "-----END PRIVATE KEY-----")
DEV_JWT_KEY_ID = "dev-2026"
KNOWN_DEFAULTS = {DEV_SECRET, "", "changeme", "change-me", "secret", "dev", "test"}
MIN_KEY_LENGTH = 32


def check_rate_limit(value: str) -> str:
    """Return ``value`` if Flask-Limiter can read it ("10 per minute", "5/second;100/hour")."""
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit such as '10 per minute'") from None
    return value


class Config(BaseModel):
    """Settings shared by every environment; subclasses change defaults only."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_default=True)
    ENV: ClassVar[str] = "base"

    SERVICE_NAME: str = Field(
        default="lookout", description="Service name shown at `/` and in traces (`service.name`).")
    GIT_COMMIT: str = Field(
        default="unknown",
        description="Commit the code was built from, shown at `/` and in `lookout_build_info`.")
    DEBUG: bool = Field(default=False, description="Flask's debug mode.")
    TESTING: bool = Field(default=False, description="Flask's testing mode.")
    SECRET_KEY: str = Field(
        default=DEV_SECRET,
        description="Flask's secret key. Production: required, 32 characters or more, not a known default.")
    DATABASE_URL: str = Field(  # relative: resolved inside the instance folder
        default="sqlite:///lookout.db",
        description="`sqlite:///...` (a relative path lives in `instance/`), `postgresql://...` "
        "(psycopg 3) or `mysql://...`/`mariadb://...` (PyMySQL). Production: required.")
    DATABASE_CONNECT_TIMEOUT: int = Field(  # seconds
        default=3, ge=1, le=60, description="Seconds a new database connection may take.")
    DATABASE_STATEMENT_TIMEOUT_MS: int = Field(  # not SQLite; 0 = off
        default=5000, ge=0,
        description="Server-side statement limit in milliseconds: PostgreSQL `statement_timeout`, MariaDB "
        "`max_statement_time`, MySQL `max_execution_time` (SELECTs only); 0 turns it off.")
    DATABASE_POOL_SIZE: int = Field(
        default=5, ge=1, description="PostgreSQL or MySQL connections kept per worker process.")
    DATABASE_POOL_TIMEOUT: float = Field(  # seconds waiting for a free connection
        default=3.0, gt=0, description="Seconds a request waits for a free pooled connection.")
    # Client-side bound on every wait for PostgreSQL's answer (statement, ping, commit), and the
    # TCP user timeout: what ends a wait when the network is cut, where statement_timeout cannot.
    DATABASE_READ_TIMEOUT: float = Field(  # seconds
        default=6.0, gt=0, le=300,
        description="Seconds any wait for the database's answer may take (client side; on PostgreSQL also "
        "the TCP user timeout); must exceed the statement timeout.")
    # After a database failure, API requests get 503 at once for this long (one trial request
    # per interval goes through); 0 turns it off. app/breaker.py
    DATABASE_FAILFAST_SECONDS: float = Field(
        default=2.0, ge=0, le=60,
        description="After a database failure, API requests get 503 at once, one trial request per "
        "this many seconds; 0 turns it off.")
    MAX_CONTENT_LENGTH: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body in bytes; a larger one gets 413.")
    JWT_PRIVATE_KEY: str = Field(
        default=DEV_JWT_PRIVATE_KEY,
        description="Ed25519 private key (PKCS#8 PEM, `openssl genpkey -algorithm ed25519`) that signs the "
        "tokens (EdDSA); give it as `JWT_PRIVATE_KEY_FILE`. Production: required, not the development key.")
    JWT_KEY_ID: str = Field(
        default=DEV_JWT_KEY_ID, pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="`kid` of `JWT_PRIVATE_KEY`: written in every token's header and published with its "
        "public key at `/.well-known/jwks.json`; a new key needs a new kid.")
    JWT_EXTRA_PUBLIC_KEYS: str | None = Field(
        default=None,
        description="Further public keys published at `/.well-known/jwks.json` besides the signing one, as "
        "a JWKS JSON document (`{\"keys\": [...]}`, Ed25519 `OKP` keys with a `kid`): the next key before "
        "it signs, the previous one while its tokens live (rotation: app/README.md). `_FILE` allowed.")
    JWKS_MAX_AGE_SECONDS: int = Field(
        default=300, ge=0, le=86400,
        description="`Cache-Control: max-age` of `/.well-known/jwks.json`: how long verifiers may keep the "
        "key set (publish a new key at least this long before it signs).")
    JWT_ISSUER: str = Field(default="lookout", description="`iss` claim tokens carry and must carry.")
    JWT_AUDIENCE: str = Field(default="lookout-api", description="`aud` claim tokens carry and must carry.")
    JWT_TTL_SECONDS: int = Field(
        default=900, ge=30, le=86400, description="Seconds a token is valid (`expires_in`).")
    JWT_LEEWAY_SECONDS: int = Field(
        default=10, ge=0, le=300, description="Seconds of clock skew allowed when checking `exp` and `iat`.")
    PASSWORD_HASH_TIME_COST: int = Field(  # argon2id, OWASP-recommended defaults
        default=3, ge=1,
        description="Argon2id passes; stored hashes are upgraded at login when this changes.")
    PASSWORD_HASH_MEMORY_KIB: int = Field(
        default=65536, ge=8,
        description="Argon2id memory per hash in KiB; stored hashes are upgraded at login when this changes.")
    PAGE_SIZE_DEFAULT: int = Field(
        default=20, ge=1, description="Users per page when `per_page` is not given.")
    PAGE_SIZE_MAX: int = Field(default=100, ge=1, description="Largest `per_page` accepted.")
    READINESS_TIMEOUT_SECONDS: float = Field(
        default=1.0, gt=0, le=30,
        description="`/readyz` answers within this many seconds, whatever the network does.")
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level of the JSON log lines on stdout, the app's and gunicorn's.")
    TELEMETRY_ENABLED: bool = Field(  # metrics and traces; logs and request ids stay on
        default=True, description="Metrics and traces; request ids and logs stay on either way.")
    METRICS_PORT: int | None = Field(  # serve /metrics only there
        default=None, ge=1, le=65535,
        description="A second listener on this port that alone serves `/metrics`; unset: `/metrics` on the "
        "main port.")
    # Tests only: serve GET /api/v1/_faults/<5xx> (app/faults.py) to burn the error budget on
    # purpose. ProductionConfig refuses it, so a production process can never answer there.
    FAULT_INJECTION: bool = Field(
        default=False,
        description="Tests only: serves `GET /api/v1/_faults/<5xx>` to burn the error budget; production "
        "refuses it.")
    RATE_LIMIT_ENABLED: bool = Field(default=True, description="Rate limits on token requests and writes.")
    RATE_LIMIT_STORAGE_URL: str = Field(  # redis://… shares the counts between processes
        default="memory://",
        description="Where the rate-limit counts live: `memory://` in each process, `redis://...` shared by "
        "processes and pods (may hold a password: use `_FILE`).")
    RATE_LIMIT_STORAGE_TIMEOUT: float = Field(  # seconds per Redis call
        default=0.5, gt=0, le=10, description="Seconds per call to the rate-limit store.")
    RATE_LIMIT_KEY_PREFIX: str = Field(
        default="lookout", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="Prefix of the keys in a shared rate-limit store.")
    RATE_LIMIT_LOGIN: str = Field(  # POST /auth/token, per client address
        default="30 per minute", description="Token requests per client address.")
    RATE_LIMIT_LOGIN_FAILURES: str = Field(  # refused logins per email+address; current_passwords per user
        default="10 per minute",
        description="Refused token requests per account email and client address; refused "
        "`current_password`s per user.")
    RATE_LIMIT_LOGIN_FAILURES_ACCOUNT: str = Field(  # the ceiling over every address
        default="100 per minute",
        description="Refused token requests per account email, from every address together.")
    RATE_LIMIT_READS: str = Field(  # GET /api/v1/users*, per user
        default="600 per minute",
        description="API reads (`GET /api/v1/users...`) per user (per client address without a valid token).")
    RATE_LIMIT_WRITES: str = Field(  # POST/PATCH/DELETE, per user (or address)
        default="120 per minute",
        description="POST, PATCH and DELETE requests per user (per client address without a valid token).")
    CACHE_URL: str = Field(  # empty: no read cache, every read goes to the database
        default="",
        description="Redis for the read cache of user records (`redis://...`, may hold a password: use "
        "`_FILE`); empty: no cache, every read from the database.")
    CACHE_TTL_SECONDS: int = Field(  # a backstop: writes invalidate at once
        default=60, ge=1, le=3600,
        description="Seconds a cached user record lives; writes remove it at once and the outbox relay "
        "again on the user's event; the TTL bounds what a failed removal leaves for a write with no event.")
    CACHE_TIMEOUT: float = Field(  # seconds per Redis call, connecting included
        default=0.1, gt=0, le=5, description="Seconds per call to the cache (connect and answer).")
    CACHE_RETRY_SECONDS: float = Field(  # after a failure, reads skip Redis this long
        default=5.0, gt=0, le=300,
        description="After a failed cache call, seconds reads go straight to the database before Redis is "
        "tried again.")
    CACHE_KEY_PREFIX: str = Field(
        default="lookout:cache", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="Prefix of the cache's keys (several services may share one Redis).")
    PUBLIC_URL: str | None = Field(  # links in responses; never from Host or X-Forwarded-*
        default=None,
        description="External `http(s)://host[:port][/path]` prefixed to the links in responses; unset: "
        "links are relative paths.")
    CORS_ORIGINS: tuple[str, ...] = Field(  # comma-separated in the environment; empty: CORS closed
        default=(),
        description="Comma-separated exact origins allowed to call `/api/*` from a browser; empty: no CORS "
        "headers. Production refuses `*`.")
    HSTS_SECONDS: int = Field(  # Strict-Transport-Security; 0: not sent
        default=31_536_000, ge=0, description="`Strict-Transport-Security` max-age in seconds; 0: not sent.")
    PROXY_TRUSTED_HOPS: int = Field(  # ProxyFix x_for/x_proto; more would let clients pick their address
        default=0, ge=0, le=2,
        description="Proxies in front that append to `X-Forwarded-For` and set `X-Forwarded-Proto` (the "
        "gateway: 1); the client address is the one that many entries from the right. 0: the headers are "
        "ignored. Only where the port is reachable through the proxy alone.")
    PROXY_TRUSTED_ADDRESSES: tuple[str, ...] = Field(  # comma-separated CIDRs in the environment
        default=(),
        description="Comma-separated CIDRs the proxy connects from; a request from elsewhere has its "
        "`X-Forwarded-*` headers ignored. Empty: any peer (the network policy admits only the gateway).")

    BROKER_URL: str | None = Field(
        default=None,
        description="RabbitMQ `amqp://user:password@host:5672/vhost` (or `amqps://`) the outbox relay "
        "publishes the user events to (may hold a password: use `_FILE`); unset: the relay does not run and "
        "events wait in the outbox.")
    BROKER_TIMEOUT_SECONDS: float = Field(
        default=5.0, gt=0, le=60,
        description="Seconds the relay waits on the broker: connecting, a confirm, a broker that blocks "
        "publishers (`blocked_connection_timeout`).")
    RELAY_BATCH_SIZE: int = Field(
        default=100, ge=1, le=10_000,
        description="Outbox rows (at most one per user) a relay claims at once.")
    RELAY_LEASE_SECONDS: float = Field(
        default=30.0, gt=0, le=3600,
        description="How long claimed rows stay a relay's; a relay that died gives them back after it. At "
        "least 3 times `BROKER_TIMEOUT_SECONDS`.")
    RELAY_POLL_SECONDS: float = Field(
        default=1.0, gt=0, le=60,
        description="Seconds an idle relay waits before looking at the outbox again.")
    RELAY_METRICS_PORT: int | None = Field(
        default=9102, ge=1, le=65535,
        description="Port of the relay's own `/metrics` (backlog, oldest unpublished age, published and "
        "failed counts); unset: none.")
    RELAY_METRICS_ADDRESS: str = Field(
        default="0.0.0.0",  # noqa: S104  # nosec B104 # a pod's metrics port is scraped from outside
        description="IP address the relay's metrics listener binds (`127.0.0.1`: this host only).")
    OUTBOX_RETENTION_HOURS: int = Field(
        default=168, ge=1, le=24 * 365,
        description="Published outbox rows older than this are deleted by the relay, in batches.")

    @field_validator("BROKER_URL")
    @classmethod
    def _amqp_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("amqp://", "amqps://")):
            raise ValueError("must be an amqp:// or amqps:// URL")
        return url or None

    @field_validator("RELAY_METRICS_ADDRESS")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        return listen_address(value)

    @model_validator(mode="after")
    def _lease_outlasts_a_publish(self) -> Config:
        if self.RELAY_LEASE_SECONDS < 3 * self.BROKER_TIMEOUT_SECONDS:
            raise ValueError("RELAY_LEASE_SECONDS must be at least 3 times BROKER_TIMEOUT_SECONDS, or a "
                             "second relay may publish a row the first is still publishing")
        return self

    @field_validator("DATABASE_URL")
    @classmethod
    def _use_psycopg3(cls, url: str) -> str:
        return database_url(url)

    @field_validator("RATE_LIMIT_LOGIN", "RATE_LIMIT_LOGIN_FAILURES", "RATE_LIMIT_LOGIN_FAILURES_ACCOUNT",
                     "RATE_LIMIT_READS", "RATE_LIMIT_WRITES")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        return check_rate_limit(value)

    @field_validator("PUBLIC_URL")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?", url):
            raise ValueError(f"{url!r} is not an http(s) URL such as https://api.example.com")
        return url.rstrip("/")

    @field_validator("RATE_LIMIT_STORAGE_URL")
    @classmethod
    def _rate_limit_storage(cls, url: str) -> str:
        if not url.startswith(("memory://", "redis://", "rediss://", "redis+unix://")):
            raise ValueError("must be memory:// or a redis:// URL")
        return url

    @field_validator("CACHE_URL")
    @classmethod
    def _cache_url(cls, url: str) -> str:
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// URL, or empty for no cache")
        return url

    @field_validator("CORS_ORIGINS", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        """Accept the environment's comma-separated form; each entry is an exact origin."""
        if isinstance(value, str):
            value = [origin.strip() for origin in value.split(",") if origin.strip()]
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
                raise ValueError(f"{origin!r} is not an origin such as https://app.example.com")
        return tuple(value)

    @field_validator("JWT_PRIVATE_KEY")
    @classmethod
    def _ed25519_private_key(cls, value: str) -> str:
        from .keys import parse_private_key

        if value.strip():  # empty: production says it is missing
            parse_private_key(value)
        return value

    @field_validator("JWT_EXTRA_PUBLIC_KEYS")
    @classmethod
    def _public_keys(cls, value: str | None) -> str | None:
        from .keys import parse_public_keys

        parse_public_keys(value or "")
        return value

    @model_validator(mode="after")
    def _signing_key_is_published(self) -> Config:
        """The boot-time self-check: the signing kid is in the published set, with this key."""
        from .keys import load_keys

        if self.JWT_PRIVATE_KEY.strip() and self.JWT_KEY_ID:
            load_keys(self.JWT_PRIVATE_KEY, self.JWT_KEY_ID, self.JWT_EXTRA_PUBLIC_KEYS or "")
        return self
    @field_validator("PROXY_TRUSTED_ADDRESSES", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        """Accept the environment's comma-separated form; each entry is an IP network."""
        if isinstance(value, str):
            value = [cidr.strip() for cidr in value.split(",") if cidr.strip()]
        for cidr in value:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a network such as 10.0.0.0/8") from None
        return tuple(value)

    @model_validator(mode="after")
    def _page_sizes_agree(self) -> Config:
        if self.PAGE_SIZE_DEFAULT > self.PAGE_SIZE_MAX:
            raise ValueError("PAGE_SIZE_DEFAULT must not exceed PAGE_SIZE_MAX")
        return self

    @model_validator(mode="after")
    def _server_cancels_first(self) -> Config:
        """A slow statement should be cancelled by PostgreSQL (the connection survives) before
        the client-side bound gives up on the connection."""
        if 0 < self.DATABASE_STATEMENT_TIMEOUT_MS >= self.DATABASE_READ_TIMEOUT * 1000:
            raise ValueError("DATABASE_READ_TIMEOUT must be longer than DATABASE_STATEMENT_TIMEOUT_MS")
        return self

    def flask_settings(self) -> dict[str, Any]:
        """Return the mapping loaded into ``app.config``, with the settings derived from it."""
        return {
            "LOOKOUT_ENV": self.ENV,
            **self.model_dump(),
            "SQLALCHEMY_DATABASE_URI": self.DATABASE_URL,
            "SQLALCHEMY_ENGINE_OPTIONS": self.engine_options(),
            **OPENAPI_SETTINGS,
        }

    def engine_options(self) -> dict[str, Any]:
        """Bound every wait on the database so an outage answers 503 instead of hanging.

        PostgreSQL: connect_timeout bounds a new connection; statement_timeout (server side)
        cancels a slow statement; a cut network leaves sent data unacknowledged, which
        tcp_user_timeout turns into an error, and keepalives find dead idle connections in the
        pool. A peer that acknowledges but never answers (a frozen server, a proxy in front of a
        dead one) is bounded by DATABASE_READ_TIMEOUT in app/database.py.

        MySQL/MariaDB: the same bounds through PyMySQL's own timeouts and the server's statement
        limit (app/platform/database.py).
        """
        # A failed statement's exception message carries its parameters (password hashes,
        # emails) and is logged by the error handlers: keep them out of messages and logs.
        if self.DATABASE_URL.startswith("sqlite:"):
            return {"connect_args": {"timeout": self.DATABASE_CONNECT_TIMEOUT}, "hide_parameters": True}
        if self.DATABASE_URL.startswith("mysql+"):  # the statement limit: app/database.py
            return mysql_engine_options(
                connect_timeout=self.DATABASE_CONNECT_TIMEOUT, read_timeout=self.DATABASE_READ_TIMEOUT,
                pool_size=self.DATABASE_POOL_SIZE, pool_timeout=self.DATABASE_POOL_TIMEOUT)
        options = f"-c statement_timeout={self.DATABASE_STATEMENT_TIMEOUT_MS}"
        return {
            "hide_parameters": True,
            "pool_size": self.DATABASE_POOL_SIZE,
            "pool_timeout": self.DATABASE_POOL_TIMEOUT,
            "pool_pre_ping": True,
            "pool_recycle": 1800,
            "connect_args": {
                "connect_timeout": self.DATABASE_CONNECT_TIMEOUT,
                "options": options,
                "tcp_user_timeout": int(self.DATABASE_READ_TIMEOUT * 1000),
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 3,
            },
        }


class DevelopmentConfig(Config):
    ENV: ClassVar[str] = "development"
    DEBUG: bool = True
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "DEBUG"


class TestingConfig(Config):
    ENV: ClassVar[str] = "testing"
    TESTING: bool = True
    DATABASE_URL: str = "sqlite://"
    # Cheap hashing keeps the suite fast; production keeps the defaults above.
    PASSWORD_HASH_TIME_COST: int = 1
    PASSWORD_HASH_MEMORY_KIB: int = 8


class ProductionConfig(Config):
    ENV: ClassVar[str] = "production"
    SECRET_KEY: str = ""
    JWT_PRIVATE_KEY: str = ""
    JWT_KEY_ID: str = ""
    DATABASE_URL: str = ""

    @field_validator("JWT_PRIVATE_KEY")
    @classmethod
    def _own_signing_key(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is missing; production needs its own Ed25519 private key (PEM)")
        if value.strip() == DEV_JWT_PRIVATE_KEY:
            raise ValueError("is the development key; generate one: openssl genpkey -algorithm ed25519")
        return value

    @field_validator("JWT_KEY_ID", mode="before")
    @classmethod
    def _key_id_required(cls, value: str) -> str:
        if not value or value == DEV_JWT_KEY_ID:
            raise ValueError("is missing; name the signing key (a new name for every new key)")
        return value

    @field_validator("SECRET_KEY")
    @classmethod
    def _strong_key(cls, value: str) -> str:
        if value.strip().lower() in KNOWN_DEFAULTS:
            raise ValueError("is missing or a known default; set a random value")
        if len(value) < MIN_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_KEY_LENGTH} characters")
        return value

    @field_validator("FAULT_INJECTION")
    @classmethod
    def _no_faults(cls, value: bool) -> bool:
        if value:
            raise ValueError("injects server errors; it is for tests and refused in production")
        return value

    @field_validator("DATABASE_URL", mode="before")
    @classmethod
    def _database_required(cls, value: str) -> str:
        if not value or value == Config.model_fields["DATABASE_URL"].default:
            raise ValueError("is missing; production needs an explicit database URL")
        return value

    @field_validator("CORS_ORIGINS")
    @classmethod
    def _no_wildcard_origin(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in value:
            raise ValueError("'*' lets any web site call the API from a browser; list the origins")
        return value


# APIFlask settings: not environment-dependent, so not overridable.
OPENAPI_SETTINGS: dict[str, Any] = {
    # Swagger UI bundled with the app (swagger-ui-bundle) renders OpenAPI 3.0, not 3.1.
    "OPENAPI_VERSION": "3.0.3",
    "DESCRIPTION": "A users API. Writes need a bearer token from `POST /api/v1/auth/token`; "
    "every error is `application/problem+json` (RFC 9457).",
    "AUTO_OPERATION_ID": True,
    "AUTO_SERVERS": False,
    "DOCS_FAVICON": "/docs/static/favicon-32x32.png",
    "SWAGGER_UI_CSS": "/docs/static/swagger-ui.css",
    "SWAGGER_UI_BUNDLE_JS": "/docs/static/swagger-ui-bundle.js",
    "SWAGGER_UI_STANDALONE_PRESET_JS": "/docs/static/swagger-ui-standalone-preset.js",
}

CONFIGS: dict[str, type[Config]] = {
    c.ENV: c for c in (DevelopmentConfig, TestingConfig, ProductionConfig)
}


def load_config(environ: Mapping[str, Any] | None = None, default_env: str = "production") -> Config:
    """Build the settings for the environment named by ``LOOKOUT_ENV`` in ``environ``."""
    environ = os.environ if environ is None else environ
    return load_settings(environ, CONFIGS, default_env)
