"""What compose.yaml refers to exists, its images are pinned, and Prometheus matches the rules.

Usage:
    python -m infra.delivery.compose_check [compose.yaml]     # exit 1 and one line per problem

The compose schema itself is checked by ``check-jsonschema --builtin-schema vendor.compose-spec``
(``make compose-check`` runs both). There is no Docker engine where the tests run, so this reads
the file the way compose would for the parts a schema cannot see:

  - every bind mount source, build context (and its Dockerfile), env_file and file-based
    secret or config exists, relative to the compose file;
  - every service without a ``build`` uses an image pinned to a version (no ``latest``, no bare name);
  - Prometheus's ``rule_files`` resolve, through the service's mounts, to the repo's rule files,
    and every ``job="..."`` the rules select is a job Prometheus scrapes (else alerts never fire);
  - Grafana's dashboard provider reads the folder where the repo's dashboards are mounted.
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

PINNED_TAG = re.compile(r"^[^:@\s]+(?::(?P<tag>[^@\s]+))?(?:@sha256:[0-9a-f]{64})?$")


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (source, target) of the service's bind mounts (named volumes are left out)."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) >= 2 and parts[0].startswith((".", "/")):
                mounts.append((parts[0], parts[1]))
        elif isinstance(volume, dict) and volume.get("type") == "bind":
            mounts.append((str(volume["source"]), str(volume["target"])))
    return mounts


def host_path(service: dict[str, Any], container_path: str, base: Path) -> Path | None:
    """Map a path inside the service's container to the repo path mounted there (longest mount wins)."""
    best: tuple[int, Path] | None = None
    path = PurePosixPath(container_path)
    for source, target in _mounts(service):
        target_path = PurePosixPath(target)
        if path == target_path or target_path in path.parents:
            rest = path.relative_to(target_path)
            candidate = (base / source / rest).resolve() if str(rest) != "." else (base / source).resolve()
            if best is None or len(target) > best[0]:
                best = (len(target), candidate)
    return best[1] if best else None


def reference_problems(compose: dict[str, Any], base: Path) -> list[str]:
    problems = []
    for name, service in (compose.get("services") or {}).items():
        for source, _ in _mounts(service):
            if not (base / source).exists():
                problems.append(f"service {name}: mount source {source} does not exist")
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not (base / context / dockerfile).is_file():
                problems.append(f"service {name}: build needs {Path(context) / dockerfile}, which is missing")
        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file.get("path", "")
            if not (base / path).is_file():
                problems.append(f"service {name}: env_file {path} does not exist")
        if build is None:
            image = str(service.get("image", ""))
            match = PINNED_TAG.match(image)
            tag = match.group("tag") if match else None
            pinned = "@sha256:" in image or (tag and tag != "latest" and re.search(r"\d", tag))
            if not pinned:
                problems.append(f"service {name}: image {image or '(none)'} is not pinned to a version")
    for kind in ("secrets", "configs"):
        for name, item in (compose.get(kind) or {}).items():
            if isinstance(item, dict) and "file" in item and not (base / item["file"]).is_file():
                problems.append(f"{kind} {name}: file {item['file']} does not exist")
    return problems


def _service_with_image(compose: dict[str, Any], image_prefix: str) -> tuple[str, dict[str, Any]] | None:
    for name, service in (compose.get("services") or {}).items():
        if str(service.get("image", "")).startswith(image_prefix):
            return name, service
    return None


def _config_arg(service: dict[str, Any], flag: str, default: str) -> str:
    for arg in service.get("command") or []:
        if str(arg).startswith(flag + "="):
            return str(arg).split("=", 1)[1]
    return default


def prometheus_problems(compose: dict[str, Any], base: Path) -> list[str]:
    found = _service_with_image(compose, "prom/prometheus")
    if found is None:
        return ["no Prometheus service (image prom/prometheus)"]
    name, service = found
    config_file = _config_arg(service, "--config.file", "/etc/prometheus/prometheus.yml")
    config_path = host_path(service, config_file, base)
    if config_path is None or not config_path.is_file():
        return [f"service {name}: its config file is not mounted from the repo"]
    config = yaml.safe_load(config_path.read_text()) or {}
    problems, rule_paths = [], []
    for pattern in config.get("rule_files") or []:
        mounted = host_path(service, pattern, base)
        if mounted is None:
            problems.append(f"service {name}: rule_files {pattern} is not mounted from the repo")
            continue
        rule_paths += [Path(p) for p in glob.glob(str(mounted))]
        if not mounted.parent.is_dir():
            problems.append(f"service {name}: rule_files {pattern}: {mounted.parent} is missing")
    rules_dir = (base / "dashboards" / "rules").resolve()
    mounted_rules = [host_path(service, p, base) for p in config.get("rule_files") or []]
    if not any(path is not None and path.parent == rules_dir for path in mounted_rules):
        problems.append(f"service {name}: rule_files do not load the repo's dashboards/rules")
    from dashboards.generate.dependencies import DEPS

    jobs = {c.get("job_name") for c in config.get("scrape_configs") or []} | DEPS.cluster_only_jobs
    for path in rule_paths:
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                for job in set(re.findall(r'\bjob\s*=\s*"([^"]+)"', str(rule.get("expr", "")))) - jobs:
                    problems.append(f"{path.name}: {rule.get('alert') or rule.get('record')} selects "
                                    f'job="{job}", which Prometheus does not scrape (jobs: {sorted(jobs)})')
    return problems


def _provisioning_files(service: dict[str, Any], base: Path, kind: str) -> list[Path]:
    """Return the repo files mounted under /etc/grafana/provisioning/<kind> (files or whole folders)."""
    files: list[Path] = []
    for source, target in _mounts(service):
        folder, mounted_at = PurePosixPath(f"/etc/grafana/provisioning/{kind}"), PurePosixPath(target)
        if folder == mounted_at or folder in mounted_at.parents:
            path = (base / source).resolve()
            files += sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
    return files


def grafana_problems(compose: dict[str, Any], base: Path) -> list[str]:
    found = _service_with_image(compose, "grafana/grafana")
    if found is None:
        return ["no Grafana service (image grafana/grafana)"]
    name, service = found
    providers = _provisioning_files(service, base, "dashboards")
    problems = [] if providers else [f"service {name}: no dashboard provider is provisioned"]
    for provider_file in providers:
        for provider in (yaml.safe_load(provider_file.read_text()) or {}).get("providers") or []:
            path = str((provider.get("options") or {}).get("path", ""))
            if host_path(service, path, base) != (base / "dashboards").resolve():
                problems.append(f"service {name}: provider {provider.get('name')} reads {path}, "
                                "where dashboards/ is not mounted")
    if not _provisioning_files(service, base, "datasources"):
        problems.append(f"service {name}: no data sources are provisioned")
    return problems


def check(compose_file: Path) -> list[str]:
    compose = yaml.safe_load(compose_file.read_text()) or {}
    base = compose_file.resolve().parent
    return [*reference_problems(compose, base), *prometheus_problems(compose, base),
            *grafana_problems(compose, base)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compose", nargs="?", type=Path, default=Path("compose.yaml"))
    args = parser.parse_args(argv)
    problems = check(args.compose)
    for problem in problems:
        print(f"compose check: {problem}")
    print(f"compose check: {len(problems)} problems in {args.compose}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
