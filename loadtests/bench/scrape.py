"""Scrape time of multiprocess metrics against the number of worker files on disk.

prometheus_client keeps a dead worker's counter files by design, so worker churn grows the
directory and every scrape reads every file.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = """
import os
os.environ.update(LOOKOUT_ENV="testing", DATABASE_URL="sqlite://")
from app import create_app
client = create_app({"DATABASE_URL": "sqlite://"}).test_client()
for path in ("/", "/livez", "/api/v1/users/1", "/api/v1/users", "/nope"):
    for _ in range(3):
        client.get(path)
"""


def one_worker_files(directory: Path) -> list[Path]:
    """Let one process serve a few routes in multiprocess mode; return the files it wrote."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", SEED], env=env, check=True, timeout=120,
                   cwd=Path(__file__).resolve().parents[2], capture_output=True)
    return sorted(directory.glob("*.db"))


def scrape_seconds(directory: Path, repeat: int = 3) -> float:
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))
        generate_latest(registry)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(worker_counts: tuple[int, ...] = (1, 10, 100, 500)) -> list[tuple[int, int, float]]:
    """Return (workers, files, seconds per scrape) for each count of workers' files."""
    rows = []
    with tempfile.TemporaryDirectory() as seed_dir, tempfile.TemporaryDirectory() as work:
        template = one_worker_files(Path(seed_dir))
        pid = template[0].stem.rsplit("_", 1)[1]
        made = 0
        for count in worker_counts:
            for fake_pid in range(made, count):  # copies stand for workers that came and went
                for path in template:
                    copy = path.name.replace(f"_{pid}.db", f"_{900000 + fake_pid}.db")
                    shutil.copy(path, Path(work) / copy)
            made = count
            files = len(list(Path(work).glob("*.db")))
            rows.append((count, files, scrape_seconds(Path(work))))
    return rows
