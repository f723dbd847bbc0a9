"""The second service's settings and the relay's: how many pods, how big, where mail goes.

They map onto the notifier's and the relay's ``ServiceArgs`` (infra/stack.py builds both from the
same component as the users API). Mail goes either to a mail catcher the stack runs (Mailpit, dev
and kind: every email readable in its web UI, nothing leaves the cluster) or to a real SMTP server
(staging, prod) named by ``smtpUrl`` with its credentials in secret settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

import pulumi

from infra.components import Resources
from infra.config.fields import Group, Key, cidrs, quantity
from infra.stack_config import ConfigError, parse_quantity

# The notifier's SMTP_URL schemes and their ports (app/notifier/config.py, SMTP_SCHEMES); only TLS
# ones here: the production settings refuse smtp+plain://, which only the mail catcher speaks.
SMTP_PORTS = {"smtps": 465, "smtp": 587}


def smtp_url(name: str, value: str) -> None:
    """An smtps:// or smtp:// URL with a host and no credentials (they are secret settings)."""
    if not value:
        return
    parts = urlsplit(value)
    if parts.scheme not in SMTP_PORTS or not parts.hostname:
        raise ConfigError(f"{name}: {value!r} is not an smtps://host[:465] (implicit TLS) or "
                          "smtp://host[:587] (STARTTLS) URL")
    if parts.username or parts.password:
        raise ConfigError(f"{name} must not hold credentials: set smtpUsername and smtpPassword "
                          "with --secret")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"{name}: {value!r} has an invalid port") from None


@dataclass(frozen=True)
class NotifierSettings(Group):
    """The notifier: its API's and its consumer's pods, its database, and where its mail goes."""

    min_replicas: Annotated[int, Key("notifierMinReplicas", at_least=1)]
    max_replicas: Annotated[int, Key("notifierMaxReplicas", at_least=1)]
    consumer_min_replicas: Annotated[int, Key("notifierConsumerMinReplicas", at_least=0)]
    consumer_max_replicas: Annotated[int, Key("notifierConsumerMaxReplicas", at_least=1)]
    cpu_request: Annotated[str, Key("notifierCpuRequest", check=quantity)]
    cpu_limit: Annotated[str, Key("notifierCpuLimit", check=quantity)]
    memory: Annotated[str, Key("notifierMemory", check=quantity)]
    database_url: Annotated[pulumi.Output[str] | None, Key("notifierDatabaseUrl")]  # external databases
    mail_server: Annotated[str, Key("mailServer", one_of=("catcher", "smtp"))]
    smtp_url: Annotated[str, Key("smtpUrl", check=smtp_url)]
    smtp_egress_cidrs: Annotated[tuple[str, ...], Key("smtpEgressCidrs", check=cidrs)]
    smtp_username: Annotated[pulumi.Output[str] | None, Key("smtpUsername")]
    smtp_password: Annotated[pulumi.Output[str] | None, Key("smtpPassword")]

    def check(self) -> None:
        if self.max_replicas < self.min_replicas:
            raise ConfigError(f"notifierMaxReplicas ({self.max_replicas}) is below notifierMinReplicas "
                              f"({self.min_replicas})")
        if self.consumer_max_replicas < self.consumer_min_replicas:
            raise ConfigError(f"notifierConsumerMaxReplicas ({self.consumer_max_replicas}) is below "
                              f"notifierConsumerMinReplicas ({self.consumer_min_replicas})")
        if parse_quantity("notifierCpuRequest", self.cpu_request) > parse_quantity("notifierCpuLimit",
                                                                                    self.cpu_limit):
            raise ConfigError("notifierCpuRequest exceeds notifierCpuLimit")
        if self.mail_server == "smtp":
            if not self.smtp_url:
                raise ConfigError("smtpUrl: mailServer smtp needs the server, e.g. smtps://smtp.example.com:465")
            if not self.smtp_egress_cidrs:
                raise ConfigError("smtpEgressCidrs: mailServer smtp needs the ranges the SMTP server is "
                                  "reached in (the notifier's network policy opens only those)")
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ConfigError("smtpUsername and smtpPassword are set together (with --secret) or not at all")

    @property
    def resources(self) -> Resources:
        # Memory request = limit: a pod is never the first evicted for what it was promised.
        return Resources(self.cpu_request, self.cpu_limit, self.memory, self.memory)

    @property
    def smtp_port(self) -> int:
        parts = urlsplit(self.smtp_url)
        return parts.port or SMTP_PORTS[parts.scheme]


@dataclass(frozen=True)
class RelaySettings(Group):
    """The outbox relay beside the users API: how many pods share the outbox."""

    replicas: Annotated[int, Key("relayReplicas", at_least=1)]
