"""Run the Pulumi program under Pulumi's mock runtime and capture everything it declares.

Usage:
    rendered = render("dev")              # the stack's config from Pulumi.yaml + Pulumi.dev.yaml
    rendered = render("prod", {"loadtestEnabled": True})   # with config overrides
    rendered.objects     # Kubernetes objects as the API server would receive them
    rendered.releases    # Helm releases: chart, version, repository, values
    rendered.manifest_files  # kubernetes.yaml.v2.ConfigFile inputs: a manifest file or URL (an operator's)
    rendered.outputs     # stack outputs (secrets as "[secret]")
    rendered.depends_on  # resource name -> names of its explicit dependencies

There is no Pulumi CLI or cluster here: ``pulumi.runtime.set_mocks`` stands in for the engine.
The mocks answer as Pulumi's engine would (camelCase keys, names filled in by auto-naming, a
load balancer address), so the program runs unchanged, from the real ``__main__.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import settings as runtime_settings

from infra import stack as stack_module
from infra.stack import RepoFiles
from infra.stack_config import INFRA_DIR, schema, stack_values

PROJECT = "lookout"
LB_ADDRESS = "203.0.113.10"  # TEST-NET-3: an address that cannot be anyone's
# What an operator sets with `pulumi config set --secret databaseUrl` (not in any stack file).
MOCK_DATABASE_URL = "postgresql://lookout:mock-password@db.internal.example:5432/lookout"
MOCK_NOTIFIER_DATABASE_URL = "postgresql://notifier:mock-password@db.internal.example:5432/notifier"
_SECRET_SIG = "4dabf18193072939515e22adb298388d"  # noqa: S105 - Pulumi's wire marker for a secret value
RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"
MANIFEST_TYPE = "kubernetes:yaml/v2:ConfigFile"  # a component the provider expands; its objects stay unseen


@dataclass
class Rendered:
    objects: list[dict[str, Any]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    manifest_files: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    depends_on: dict[str, list[str]] = field(default_factory=dict)
    components: dict[str, str] = field(default_factory=dict)  # name -> type token

    def find(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        """Return the objects of ``kind`` (optionally with ``metadata.name``)."""
        return [o for o in self.objects
                if o["kind"] == kind and (name is None or o["metadata"].get("name") == name)]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = self.find(kind, name)
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]


def plain(value: Any) -> Any:
    """Unwrap secrets and turn the engine's floats back into the integers they were."""
    if isinstance(value, dict):
        if value.get(_SECRET_SIG):
            return plain(value["value"])
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RecordingMocks(pulumi.runtime.Mocks):
    """Answer resource registrations like the engine, and keep what was declared."""

    def __init__(self) -> None:
        self.rendered = Rendered()

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = plain(args.inputs)
        if args.resource_id:  # a read of an object someone else created (Service.get)
            namespace, _, name = args.resource_id.rpartition("/")
            return args.resource_id, {"metadata": {"name": name, "namespace": namespace},
                                      "status": {"loadBalancer": {"ingress": [{"ip": LB_ADDRESS}]}}}
        if not args.custom:
            self.rendered.components[args.name] = args.typ
            if args.typ == MANIFEST_TYPE:
                self.rendered.manifest_files.append({"name": args.name, **inputs})
            return "", inputs
        state = dict(inputs)
        if args.typ == RELEASE_TYPE:
            self.rendered.releases.append(inputs)
            state["status"] = {"name": inputs.get("name", args.name), "namespace": inputs.get("namespace"),
                               "status": "deployed"}
        elif args.typ.startswith("random:"):
            state["result"] = "mock" + hashlib.sha256(args.name.encode()).hexdigest()[:28]
        elif args.typ.startswith("kubernetes:"):
            metadata = state.setdefault("metadata", {})
            # The provider auto-names objects without a name (name plus a random suffix); a stable
            # suffix keeps the written manifests reproducible.
            metadata.setdefault("name", f"{args.name}-{hashlib.sha256(args.name.encode()).hexdigest()[:8]}")
            self.rendered.objects.append(state)
            if state.get("kind") == "Service" and state.get("spec", {}).get("type") == "LoadBalancer":
                state = {**state, "status": {"loadBalancer": {"ingress": [{"ip": LB_ADDRESS}]}}}
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def config_strings(values: dict[str, Any]) -> dict[str, str]:
    """Encode config values as the CLI hands them to a program (arrays and objects as JSON)."""
    def encode(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else json.dumps(value)
    return {f"{PROJECT}:{key}": encode(value) for key, value in values.items()}


def run_program(program: Callable[[], Any], stack: str, config: dict[str, Any] | None = None) -> Rendered:
    """Run ``program`` (which declares resources) under mocks for ``stack`` and return what it declared."""
    # The mock runtime needs a current event loop from set_mocks on (it registers the root stack
    # there, outside any running loop). Python 3.14 no longer makes one on demand, and 3.12-3.13
    # warn when they do, so each run makes its own, as Pulumi's testing guide now does per test,
    # and closes it after.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return _run_with_mocks(program, stack, config)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _run_with_mocks(program: Callable[[], Any], stack: str, config: dict[str, Any] | None) -> Rendered:
    secret_keys = [f"{PROJECT}:{name}" for name, key in schema().items() if key.secret]
    mocks = RecordingMocks()
    runtime_settings.ROOT.set(None)  # a fresh root stack per run: exports of an earlier run go
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config(config_strings(config or {}), secret_keys)

    def record_dependencies(args: pulumi.ResourceTransformationArgs) -> None:
        deps = args.opts.depends_on if args.opts else None
        deps = deps if isinstance(deps, list) else [deps] if deps else []
        mocks.rendered.depends_on[args.name] = [d.pulumi_resource_name for d in deps]

    @pulumi.runtime.test
    def run() -> pulumi.Output[Any]:
        pulumi.runtime.register_stack_transformation(record_dependencies)
        program()

        async def outputs() -> dict[str, Any]:
            root = runtime_settings.get_root_resource()
            collected = {}
            for name, output in root.outputs.items():  # type: ignore[union-attr]
                value = pulumi.Output.from_input(output)
                collected[name] = "[secret]" if await value.is_secret() else await value.future()
            return collected

        return pulumi.Output.from_input(asyncio.ensure_future(outputs())).apply(mocks.rendered.outputs.update)

    run()
    return mocks.rendered


def render(stack: str, overrides: dict[str, Any] | None = None, files: RepoFiles | None = None) -> Rendered:
    """Run ``infra/__main__.py`` for ``stack`` (its config plus ``overrides``) and return what it declared.

    ``files`` stands in for the repo's dashboards, rules and locust files (synthetic sets in tests).
    """
    values = stack_values(stack, fake_secrets=True)
    if values["databaseMode"] == "external" and not values["databaseUrl"]:
        values["databaseUrl"] = MOCK_DATABASE_URL
    if values["databaseMode"] == "external" and not values["notifierDatabaseUrl"]:
        values["notifierDatabaseUrl"] = MOCK_NOTIFIER_DATABASE_URL
    values.update(overrides or {})
    original = stack_module.repo_files
    if files is not None:
        stack_module.repo_files = lambda root=stack_module.REPO_ROOT: files  # __main__ imports it at run time
    try:
        main = str(INFRA_DIR / "__main__.py")
        return run_program(lambda: runpy.run_path(main, run_name="__main__"), stack, values)
    finally:
        stack_module.repo_files = original
