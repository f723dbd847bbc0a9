"""Which part of the repository may import which: the agreed directions, and app/ without cycles.

``MAY_IMPORT`` is the one statement of the directions (README.md describes the same list). Every
.py file is read with ``ast``: imports inside functions count, relative imports are resolved,
and a forbidden edge is reported with its file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Part (a module prefix) -> the prefixes, besides its own, it may import; None: anything.
# A prefix covers its submodules except those of a longer part: "infra" is not "infra.delivery".
MAY_IMPORT: dict[str, frozenset[str] | None] = {
    "app": frozenset({"app.platform"}),  # the users service
    "app.platform": frozenset(),  # what every service is built from; imports no service
    "app.notifier": frozenset({"app.platform"}),  # the second service
    "dashboards": frozenset(),
    "infra": frozenset({"dashboards"}),  # the Pulumi program: infra/ except infra/delivery
    "infra.delivery": frozenset({"infra", "loadtests", "dashboards"}),
    # infra.stack_config: the pure YAML reader; app.notifier: its capacity run reads its defaults
    "loadtests": frozenset({"app", "app.platform", "app.notifier", "dashboards", "infra.stack_config"}),
    "tests": None,
}


@dataclass(frozen=True)
class Import:
    path: Path  # relative to the tree's root
    line: int
    importer: str  # dotted module name of the file
    module: str  # what it imports, resolved to the longest repository module it names
    type_checking: bool  # under ``if TYPE_CHECKING:``: never executed


def part_of(module: str) -> str | None:
    """The longest part that is ``module`` or a package above it."""
    found = [p for p in MAY_IMPORT if module == p or module.startswith(p + ".")]
    return max(found, key=len) if found else None


def allowed(importer: str, module: str) -> bool:
    own, target = part_of(importer), part_of(module)
    if own is None or target is None or own == target:
        return True
    permitted = MAY_IMPORT[own]
    if permitted is None:
        return True
    return any((module == p or module.startswith(p + ".")) and part_of(p) == target for p in permitted)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def local_modules(root: Path) -> dict[str, str]:
    """Every repository module by dotted name, and the test helpers also by their bare name, as
    pytest puts tests/ on sys.path (``from traffic import Traffic`` is ``tests.traffic``)."""
    modules = {name: name for name in map(lambda p: module_name(root, p), python_files(root))}
    for name in list(modules):
        if name.startswith("tests.") and name.count(".") == 1:
            modules.setdefault(name.removeprefix("tests."), name)
    return modules


def python_files(root: Path) -> Iterator[Path]:
    for part in {p.split(".")[0] for p in MAY_IMPORT}:
        for path in sorted((root / part).rglob("*.py")):
            if not {".venv", "__pycache__", "node_modules"} & set(path.parts):
                yield path


def imports(root: Path) -> Iterator[Import]:
    """Every import of a repository module, anywhere in every file."""
    modules = local_modules(root)
    for path in python_files(root):
        importer = module_name(root, path)
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        guarded = {id(inner) for node in ast.walk(tree) if _is_type_checking(node)
                   for statement in node.body for inner in ast.walk(statement)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _named(node, package):
                target = _resolve(name, modules)
                if target is not None:
                    yield Import(path.relative_to(root), node.lineno, importer, target, id(node) in guarded)


def _is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _named(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The modules an import statement names: ``from a import b`` names ``a.b`` (which may be a
    name in ``a`` rather than a module: see _resolve)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]


def _resolve(name: str, modules: dict[str, str]) -> str | None:
    """The longest prefix of ``name`` that is a repository module, None when there is none."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return modules[candidate]
    return None


def violations(root: Path) -> list[str]:
    return sorted(f"{i.path}:{i.line}: {i.importer} imports {i.module} "
                  f"({part_of(i.importer)} -> {part_of(i.module)} is not an agreed direction)"
                  for i in imports(root) if not allowed(i.importer, i.module))


def cycles(root: Path, package: str) -> list[list[str]]:
    """Each group of ``package``'s modules that import one another, lazy imports included, as
    its edges with file and line. Importing ``a.b`` runs ``a/__init__.py`` too, but that
    implicit import of the parent is not an edge; an import only a type checker runs is none."""
    edges: dict[str, dict[str, Import]] = {}
    for i in imports(root):
        if part_of(i.importer) == package and part_of(i.module) == package and not i.type_checking:
            if i.module != i.importer:
                edges.setdefault(i.importer, {}).setdefault(i.module, i)
    reach = {module: _reachable(module, edges) for module in edges}
    groups = {frozenset(m for m in reach if m in reach[module] and module in reach[m])
              for module in reach if module in reach[module]}
    return sorted(sorted(f"{a} -> {b} ({i.path}:{i.line})" for a in group
                         for b, i in edges[a].items() if b in group) for group in groups)


def _reachable(start: str, edges: dict[str, dict[str, Import]]) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(start, {}))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(edges.get(module, {}))
    return seen


def test_every_import_follows_the_agreed_directions():
    found = violations(ROOT)
    assert not found, "imports against the agreed directions:\n" + "\n".join(found)


def test_app_has_no_import_cycle():
    found = cycles(ROOT, "app")
    assert not found, "import cycles in app/ (lazy imports count):\n" + "\n\n".join(
        "\n".join(group) for group in found)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


TREE = {
    "app/__init__.py": "",
    "app/config.py": "import os\n",
    "app/api/__init__.py": "from ..config import os\n",
    "app/platform/__init__.py": "",
    "app/platform/settings.py": "import os\n",
    "app/notifier/__init__.py": "from ..platform import settings\n",
    "app/errors.py": "from .platform.settings import os\n",
    "dashboards/__init__.py": "",
    "infra/__init__.py": "",
    "infra/config.py": "",
    "infra/stack_config.py": "import yaml\n",
    "infra/delivery/__init__.py": "",
    "infra/delivery/smoke.py": "from infra import config\nfrom loadtests.harness import free_port\n",
    "loadtests/__init__.py": "",
    "loadtests/harness.py": "from infra.stack_config import load\nimport app.config\n",
    "tests/__init__.py": "",
    "tests/traffic.py": "",
    "tests/test_x.py": "import infra.delivery.smoke\nfrom traffic import Traffic\n",
}


def test_the_synthetic_tree_follows_the_directions(tmp_path):
    assert violations(write(tmp_path, TREE)) == []


@pytest.mark.parametrize("path, source, line, edge", [
    ("app/api/users.py", "def view():\n    from loadtests import harness\n", 4, "app -> loadtests"),
    ("app/api/users.py", "import dashboards\n", 3, "app -> dashboards"),
    ("dashboards/loader.py", "from infra.stack_config import load\n", 3, "dashboards -> infra"),
    ("infra/config.py", "\nfrom app.config import Config\n", 4, "infra -> app"),
    ("infra/config.py", "from .delivery import smoke\n", 3, "infra -> infra.delivery"),
    ("loadtests/stack.py", "import infra.config\n", 3, "loadtests -> infra"),
    ("loadtests/stack.py", "from infra.delivery.smoke import x\n", 3, "loadtests -> infra.delivery"),
    ("loadtests/bench/run.py", "from ..harness import free_port\nfrom traffic import Traffic\n", 4,
     "loadtests -> tests"),
    ("infra/delivery/e2e.py", "from app import create_app\n", 3, "infra.delivery -> app"),
    ("app/platform/errors.py", "from ..config import os\n", 3, "app.platform -> app"),
    ("app/platform/health.py", "from app.notifier import x\n", 3, "app.platform -> app.notifier"),
    ("app/notifier/api.py", "from app.api import users\n", 3, "app.notifier -> app"),
    ("app/api/users.py", "from app.notifier import consumer\n", 3, "app -> app.notifier"),
])
def test_a_forbidden_import_is_named_with_its_file_and_line(tmp_path, path, source, line, edge):
    write(tmp_path, {**TREE, path: "import os\n\n" + source})
    found = violations(tmp_path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}:{line}: ") and f"({edge} is not" in found[0], found


def test_a_cycle_is_found_through_a_lazy_import_but_not_the_parent_package(tmp_path):
    write(tmp_path, {
        **TREE,
        "app/__init__.py": "from .api import users\n",  # app.api.users -> app would be implicit
        "app/api/users.py": "from ..config import os\n",
        "app/errors.py": "def handler():\n    from .ratelimit import limit\n",
        "app/ratelimit.py": "from app.errors import handler\n",
        # Imports only a type checker runs make no cycle.
        "app/typed.py": "import typing\nif typing.TYPE_CHECKING:\n    from app.schemas import h\n",
        "app/schemas.py": "from app.typed import x\n",
    })
    assert cycles(tmp_path, "app") == [["app.errors -> app.ratelimit (app/errors.py:2)",
                                        "app.ratelimit -> app.errors (app/ratelimit.py:1)"]]
