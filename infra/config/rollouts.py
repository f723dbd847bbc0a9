"""Progressive delivery's settings: whether the service is a canary Rollout, its steps and its judge.

They map onto ``ProgressiveDeliveryArgs`` (the controller) and ``Canary`` (infra/components/rollouts.py),
which the service's Args carry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import pulumi

from infra.components.rollouts import Canary, ProgressiveDeliveryArgs
from infra.config.fields import Group, Key, prometheus_duration
from infra.stack_config import ConfigError


def weights(name: str, value: tuple[str, ...]) -> None:
    numbers = []
    for item in value:
        try:
            numbers.append(int(item))
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: {item!r} is not a whole percentage") from None
    if not numbers or any(not 0 < n < 100 for n in numbers) or numbers != sorted(set(numbers)):
        raise ConfigError(f"{name}: {list(value)} must be rising percentages between 1 and 99 "
                          "(the last step, 100, is the promotion)")


def pause(name: str, value: str) -> None:
    """A step's pause as Argo Rollouts reads it: a whole number of seconds, minutes or hours."""
    if not re.fullmatch(r"[1-9][0-9]*[smh]", value):
        raise ConfigError(f"{name}: {value!r} is not a duration such as 90s, 2m or 1h")


@dataclass(frozen=True)
class DeliverySettings(Group):
    """The canary: on or off, the share of pods per step, the pause after each, the analysis."""

    progressive: Annotated[bool, Key("progressiveDelivery")]
    namespace: Annotated[str, Key("rolloutsNamespace")]
    canary_weights: Annotated[tuple[str, ...], Key("canaryWeights", check=weights)]
    canary_pause: Annotated[str, Key("canaryPause", check=pause)]
    analysis_interval: Annotated[str, Key("canaryAnalysisInterval", check=prometheus_duration)]
    failure_limit: Annotated[int, Key("canaryFailureLimit", at_least=0)]

    def args(self) -> ProgressiveDeliveryArgs:
        return ProgressiveDeliveryArgs(namespace=self.namespace)

    def canary(self, *, prometheus_url: str, depends_on: Sequence[pulumi.Resource]) -> Canary | None:
        """The service's canary (None: a plain Deployment with a rolling update)."""
        if not self.progressive:
            return None
        return Canary(prometheus_url=prometheus_url, weights=tuple(int(w) for w in self.canary_weights),
                      pause=self.canary_pause, analysis_interval=self.analysis_interval,
                      failure_limit=self.failure_limit, depends_on=tuple(depends_on))
