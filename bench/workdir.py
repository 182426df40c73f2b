"""Each benchmark run's own directory: servers' data, logs, worker state; nothing outside it.

    with run_dir(args.work_dir, "roomlogs-bench-ingest-") as work_dir:
        ...

`--work-dir DIR` (a new or empty directory) is kept as the run left it. Without it, a fresh temporary
directory is made, removed after a run that succeeded, and kept after one that failed (an exception,
SystemExit, Ctrl-C), with its path on stderr: that is where the logs the failure message names are.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["add_work_dir_argument", "run_dir"]


def add_work_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="a new or empty directory for this run's servers, data and logs, kept afterwards (default: a "
        "fresh temporary directory, removed after a run that succeeded, kept after one that failed)",
    )


@contextlib.contextmanager
def run_dir(given: Path | None, prefix: str) -> Iterator[Path]:
    """The run's directory (absolute); see the module docstring for what is kept."""
    if given is not None:
        path = given.resolve()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise SystemExit(f"--work-dir {given}: not an empty directory (each run writes into its own)")
        path.mkdir(parents=True, exist_ok=True)
        try:
            yield path
        except BaseException:
            print(f"\nrun failed; its servers' data and logs are in {path}", file=sys.stderr, flush=True)
            raise
        return
    path = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
    try:
        yield path
    except BaseException:
        if any(path.iterdir()):
            print(f"\nrun failed; its servers' data and logs are kept in {path}", file=sys.stderr, flush=True)
        else:
            path.rmdir()  # failed before writing anything (a usage error): nothing to keep
        raise
    shutil.rmtree(path, ignore_errors=True)
