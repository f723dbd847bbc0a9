"""What the capacity report needs from the Pulumi stacks: replica bounds, CPU request, HPA targets.

Usage:
    for stack in read_stacks(): stack.name, stack.max_replicas, stack.sources

Each ``infra/Pulumi.<stack>.yaml`` is read through infra/stack_config.py, which merges it with
the defaults declared in ``infra/Pulumi.yaml`` and checks it the way ``pulumi up`` would;
``sources`` says which file each value came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from infra.stack_config import INFRA_DIR, parse_quantity, stack_overrides, stack_values

# StackSizing field -> the infra config key it comes from.
KEYS = {"min_replicas": "minReplicas", "max_replicas": "maxReplicas", "cpu_request": "cpuRequest",
        "cpu_target": "targetCpuUtilization", "requests_target": "targetRequestsPerSecond"}


@dataclass(frozen=True)
class StackSizing:
    name: str
    min_replicas: int
    max_replicas: int
    cpu_request_cores: float
    cpu_target: float  # fraction of the CPU request the HPA aims for
    sources: dict[str, str] = field(default_factory=dict)  # field -> file:key
    requests_target: int = 0  # the HPA's per-pod request-rate target (0: CPU only)


def read_stack(name: str, infra: Path = INFRA_DIR) -> StackSizing:
    """Return one stack's sizing, as the deployed program would see it."""
    values = stack_values(name, infra, fake_secrets=True)
    overrides = stack_overrides(name, infra)
    sources = {attr: f"{f'Pulumi.{name}.yaml' if key in overrides else 'Pulumi.yaml'}:{key}"
               for attr, key in KEYS.items()}
    return StackSizing(
        name=name, min_replicas=int(values["minReplicas"]), max_replicas=int(values["maxReplicas"]),
        cpu_request_cores=float(parse_quantity("cpuRequest", str(values["cpuRequest"]))),
        cpu_target=int(values["targetCpuUtilization"]) / 100, sources=sources,
        requests_target=int(values["targetRequestsPerSecond"]))


def read_stacks(infra: Path = INFRA_DIR) -> list[StackSizing]:
    """Return the sizing of every stack that has a ``Pulumi.<stack>.yaml`` in ``infra``."""
    names = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in infra.glob("Pulumi.*.yaml"))
    if not names:
        raise FileNotFoundError(f"no Pulumi.<stack>.yaml in {infra}")
    return [read_stack(name, infra) for name in names]
