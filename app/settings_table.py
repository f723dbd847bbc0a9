"""Keep the settings table of app/README.md in step with the settings classes of app/config.py.

Usage:
    python -m app.settings_table     # rewrite the table between the markers in app/README.md (make docs)
    settings_table()                 # the table as Markdown (a test compares it with the README)

Every field of ``Config`` is a row: its type and bounds, its default, what each environment's
class changes, and the field's ``description``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from app.config import CONFIGS, DEV_JWT_PRIVATE_KEY, DEV_SECRET, Config

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
ENVIRONMENTS = ("development", "testing", "production")
BOUNDS = (("ge", "≥ {}"), ("gt", "> {}"), ("le", "≤ {}"), ("lt", "< {}"))


def _type(field: FieldInfo) -> str:
    """The field's type as a reader sets it in the environment, with its bounds."""
    annotation = field.annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return " / ".join(f"`{a}`" for a in args)
    if typing.get_origin(annotation) is tuple:
        text = "list"
    elif isinstance(annotation, types.UnionType) and type(None) in args:
        text = " or ".join(a.__name__ for a in args if a is not type(None)) + ", optional"
    else:
        text = getattr(annotation, "__name__", str(annotation))
    bounds = [template.format(getattr(m, name)) for m in field.metadata
              for name, template in BOUNDS if getattr(m, name, None) is not None]
    pattern = next((m.pattern for m in field.metadata if getattr(m, "pattern", None)), None)
    if pattern:
        bounds.append(f"matching `{pattern}`")
    return ", ".join([text, *bounds])


def _value(value: Any) -> str:
    """A default as the environment would spell it."""
    if value in (DEV_SECRET, DEV_JWT_PRIVATE_KEY):
        return "a development key"
    if value is None:
        return "unset"
    if value == ():
        return "empty"
    if value == "":
        return "required"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def settings_table(base: type[Config] = Config,
                   classes: Mapping[str, type[Config]] = CONFIGS) -> str:
    """Return every setting with its type, default, per-environment values and description."""
    rows = ["| setting | type | default | " + " | ".join(ENVIRONMENTS) + " | description |",
            "|---|---|---|" + "---|" * len(ENVIRONMENTS) + "---|"]
    for name, field in base.model_fields.items():
        default = field.default
        changed = [classes[env].model_fields[name].default for env in ENVIRONMENTS]
        per_env = " | ".join(_value(v) if v != default else "" for v in changed)
        description = (field.description or "").replace("|", "/")
        rows.append(f"| `{name}` | {_type(field)} | {_value(default)} | {per_env} | {description} |")
    return "\n".join(rows)


def replace_marked(readme: Path, start: str, end: str, table: str) -> bool:
    """Replace what lies between the ``start`` and ``end`` markers of ``readme`` with ``table``;
    return whether the file changed. Shared by every generated table of the READMEs."""
    text = readme.read_text()
    head, _, rest = text.partition(start)
    if not rest or end not in rest:
        raise SystemExit(f"{readme} lacks the {start} ... {end} markers")
    _, _, tail = rest.partition(end)
    new = f"{head}{start}\n{table}\n{end}{tail}"
    readme.write_text(new)
    return new != text


def rewrite(readme: Path = README) -> bool:
    """Replace the table between the markers; return whether the file changed."""
    return replace_marked(readme, START, END, settings_table())


if __name__ == "__main__":
    print(f"{README}: {'updated' if rewrite() else 'already up to date'}")
