"""Keep the authorization table of app/README.md in step with the rules of app/api/policy.py.

Usage:
    python -m app.policy_table     # rewrite the table between the markers in app/README.md (make docs)
    policy_table()                 # the table as Markdown (a test compares it with the README)
"""

from __future__ import annotations

from pathlib import Path

from app.api.policy import RULES, Caller, Operation, Rule
from app.settings_table import replace_marked

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- authorization-table:start -->", "<!-- authorization-table:end -->"
REQUESTS = {
    Operation.LIST: "`GET /api/v1/users`",
    Operation.GET: "`GET /api/v1/users/{id}`",
    Operation.ME: "`GET /api/v1/users/me`",
    Operation.CREATE: "`POST /api/v1/users`",
    Operation.CREATE_ADMIN: "`POST /api/v1/users` with `role: admin`",
    Operation.PATCH_PROFILE: "`PATCH /api/v1/users/{id}` `name`, `email`",
    Operation.PATCH_PASSWORD: "`PATCH /api/v1/users/{id}` `password`",
    Operation.PATCH_ROLE: "`PATCH /api/v1/users/{id}` `role`",
    Operation.DELETE: "`DELETE /api/v1/users/{id}`",
}


def _cell(rule: Rule | None) -> str:
    if rule is None:
        return "-"
    return f"{rule.status} {rule.view}" if rule.view else str(rule.status)


def policy_table() -> str:
    """The rules as a Markdown table: one row per operation, one column per kind of caller."""
    rows = ["| operation | " + " | ".join(Caller) + " |", "|---|" + "---|" * len(Caller)]
    for operation, cells in RULES.items():
        rows.append(f"| {REQUESTS[operation]} | " + " | ".join(_cell(cells.get(c)) for c in Caller) + " |")
    return "\n".join(rows)


def rewrite(readme: Path = README) -> bool:
    """Replace the table between the markers; return whether the file changed."""
    return replace_marked(readme, START, END, policy_table())


if __name__ == "__main__":
    print(f"{README}: {'updated' if rewrite() else 'already up to date'}")
