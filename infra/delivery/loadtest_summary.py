"""Turn a Locust run's CSV into a Markdown table judged by the SLO gate (for $GITHUB_STEP_SUMMARY).

Usage:
    python -m infra.delivery.loadtest_summary [reports/loadtest_stats.csv] [--title TEXT]

Below the table comes the event-to-email section of ``loadtest.md`` beside the CSV (what
``make loadtest`` measured of the emails, or why it did not), when that file is there.

The verdict line uses the gate's own ``evaluate`` and the limits of dashboards/slo.yaml, so the
table and the exit code of ``make loadtest`` cannot disagree. This command only reports: it exits
0 whatever the verdict (the load test's exit code is the gate), and 1 when the CSV is missing or
unreadable, because then the load test did not run at all.

Environment variables read: GITHUB_STEP_SUMMARY (appended to when set; stdout otherwise).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# The gate imports Locust, which would monkey-patch this process for gevent; nothing here needs it.
os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")

from loadtests.gate import evaluate
from loadtests.slo import thresholds

DEFAULT_CSV = Path("reports") / "loadtest_stats.csv"
EMAIL_HEADING = "## Event-to-email latency"  # loadtests/report.py's email_section
PERCENTILES = {0.5: "50%", 0.95: "95%", 0.99: "99%"}


@dataclass
class Row:
    """One line of Locust's ``*_stats.csv`` (times in milliseconds)."""

    method: str
    name: str
    num_requests: int
    num_failures: int
    rps: float
    percentiles: dict[float, float]

    @property
    def fail_ratio(self) -> float:
        return self.num_failures / self.num_requests if self.num_requests else 0.0

    def get_response_time_percentile(self, percent: float) -> float:
        return self.percentiles[percent]


def read_stats(path: Path) -> list[Row]:
    """Read the per-endpoint rows and the Aggregated row (last) of a Locust stats CSV."""
    with path.open(newline="") as f:
        rows = []
        for line in csv.DictReader(f):
            rows.append(Row(
                method=line["Type"], name=line["Name"], num_requests=int(line["Request Count"]),
                num_failures=int(line["Failure Count"]), rps=float(line["Requests/s"]),
                percentiles={p: float(line[column] if line[column] not in ("", "N/A") else 0)
                             for p, column in PERCENTILES.items()}))
    if not rows or rows[-1].name != "Aggregated":
        raise ValueError(f"{path} has no Aggregated row: not a Locust stats file")
    return rows


def markdown(rows: list[Row], title: str = "Load test") -> str:
    """Return the table with the SLO verdict above it."""
    limits = thresholds()
    total = rows[-1]
    # Logins have a p99 limit of their own, which the gate holds them to (loadtests/gate.py).
    logins = next((row for row in rows[:-1] if limits.login_route and row.name == limits.login_route), None)
    violations = evaluate(total, limits, logins=logins)
    verdict = "✅ within the SLO" if not violations else "❌ SLO broken: " + "; ".join(map(str, violations))
    lines = [
        f"### {title}: {verdict}", "",
        f"Limits (dashboards/slo.yaml): failure ratio ≤ {limits.max_failure_ratio:.2%}, "
        f"p95 ≤ {limits.p95_seconds * 1000:.0f} ms, p99 ≤ {limits.p99_seconds * 1000:.0f} ms.", "",
        "| request | count | failures | req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = "**all requests**" if row is total else f"`{row.method} {row.name}`"
        p = row.percentiles
        marks = {0.95: limits.p95_seconds, 0.99: limits.p99_seconds}
        cells = [f"{p[q]:.0f}" + (" ❌" if row is total and p[q] / 1000 > marks[q] else "")
                 for q in (0.95, 0.99)]
        failures = f"{row.num_failures} ({row.fail_ratio:.2%})"
        if row is total and row.fail_ratio > limits.max_failure_ratio:
            failures += " ❌"
        lines.append(f"| {name} | {row.num_requests} | {failures} | {row.rps:.1f} | {p[0.5]:.0f} | "
                     f"{cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def email_section(csv_path: Path) -> str:
    """The event-to-email section of the ``loadtest.md`` beside ``csv_path``, its heading one level
    below the table's; empty when there is no such file or section."""
    try:
        text = (csv_path.parent / "loadtest.md").read_text()
    except OSError:
        return ""
    _, heading, section = text.partition(EMAIL_HEADING)
    return f"##{heading}{section}".rstrip() + "\n" if heading else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV, help=f"default {DEFAULT_CSV}")
    parser.add_argument("--title", default="Load test", help="heading of the table")
    args = parser.parse_args(argv)
    try:
        text = markdown(read_stats(args.csv), args.title)
        emails = email_section(args.csv)
        if emails:
            text += "\n" + emails
    except (OSError, ValueError, KeyError) as exc:
        print(f"loadtest summary: cannot read {args.csv}: {exc}", file=sys.stderr)
        return 1
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with Path(target).open("a") as out:
            out.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
