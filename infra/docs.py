"""Keep the config table of infra/README.md in step with infra/Pulumi.yaml.

Usage:
    python -m infra.docs            # rewrite the table between the markers in infra/README.md
    config_table()                  # the table as Markdown (a test compares it with the README)
"""

from __future__ import annotations

import json
from pathlib import Path

from infra.stack_config import INFRA_DIR, schema, stack_overrides

README = INFRA_DIR / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"
STACKS = ("dev", "prod")


def _cell(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`" if text != "" else '`""`'


def config_table(infra_dir: Path = INFRA_DIR) -> str:
    """Return every declared key with its type, default, per-stack overrides and description."""
    overrides = {stack: stack_overrides(stack, infra_dir) for stack in STACKS}
    rows = ["| key | type | default | " + " | ".join(STACKS) + " | description |",
            "|---|---|---|" + "---|" * len(STACKS) + "---|"]
    for name, key in schema(infra_dir / "Pulumi.yaml").items():
        kind = f"array<{key.items}>" if key.type == "array" else key.type
        default = "secret, required" if key.required else _cell(key.default)
        stacks = " | ".join(_cell(overrides[s][name]) if name in overrides[s] else "" for s in STACKS)
        rows.append(f"| `{name}` | `{kind}` | {default} | {stacks} | {key.description.replace('|', '/')} |")
    return "\n".join(rows)


def rewrite(readme: Path = README) -> bool:
    """Replace the table between the markers; return whether the file changed."""
    text = readme.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    if not rest or END not in rest:
        raise SystemExit(f"{readme} lacks the {START} ... {END} markers")
    new = f"{head}{START}\n{config_table()}\n{END}{tail}"
    readme.write_text(new)
    return new != text


if __name__ == "__main__":
    print(f"{README}: {'updated' if rewrite() else 'already up to date'}")
