"""`python -m tools.metrics_dir --reset`: empty PROMETHEUS_MULTIPROC_DIR before the processes
that write to it start (the release step in docker-compose.yml, `make smoke-production`).
prometheus_client keeps a dead process's counters in its files, and gunicorn recycles workers,
so without a reset per deploy the directory, and the time a scrape takes, only grow."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def reset(directory: Path) -> int:
    """Remove the counter files (only those) in `directory`, creating it if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    removed = 0
    for path in directory.glob("*.db"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.metrics_dir")
    parser.add_argument("--reset", action="store_true", help="remove every *.db file")
    args = parser.parse_args(argv)
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        print("PROMETHEUS_MULTIPROC_DIR is not set: nothing to do", file=sys.stderr)
        return 0
    if args.reset:
        print(f"{directory}: removed {reset(Path(directory))} metrics files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
