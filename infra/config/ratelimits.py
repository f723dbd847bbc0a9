"""The rate limits' settings: where the counts are kept (``RateLimitStoreArgs``) and the limits the
app enforces, which reach it through its environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from infra.components import RateLimitStoreArgs
from infra.config.fields import Group, Key, rate_limit


@dataclass(frozen=True)
class RateLimitSettings(Group):
    """The limits, and whether every pod counts them in one shared store."""

    storage: Annotated[str, Key("rateLimitStorage", one_of=("redis", "memory"))]
    login: Annotated[str, Key("rateLimitLogin", check=rate_limit)]
    login_failures: Annotated[str, Key("rateLimitLoginFailures", check=rate_limit)]
    writes: Annotated[str, Key("rateLimitWrites", check=rate_limit)]

    @property
    def shared(self) -> bool:
        """Whether the pods count in one store (redis) rather than each process alone (memory)."""
        return self.storage == "redis"

    def store_args(self, client_namespace: str, client_labels: Mapping[str, str],
                   scrape_namespace: str = "") -> RateLimitStoreArgs:
        """Return the store's Args: it lets in only the service's pods (and Prometheus, to its exporter)."""
        return RateLimitStoreArgs(client_namespace=client_namespace, client_labels=client_labels,
                                  scrape_namespace=scrape_namespace)
