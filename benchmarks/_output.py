"""Where a benchmark writes its JSON: an ignored scratch folder unless recording.

Runs are for looking at, so by default they leave the checkout clean: results
go to ``.bench/`` at the repository root (git-ignored). ``--record`` writes the
committed ``benchmarks/*.json`` instead, for a run meant to be published.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRATCH = HERE.parent / ".bench"


def add_arguments(parser: argparse.ArgumentParser, name: str, flag: str = "--out") -> None:
    """``--record`` and an explicit path option (``flag``) for the results ``name``."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--record",
        action="store_true",
        help=f"write the committed benchmarks/{name} (default: .bench/{name}, git-ignored)",
    )
    where.add_argument(flag, type=Path, default=None, help="write the results JSON here instead")


def path(chosen: Path | None, record: bool, name: str) -> Path:
    """The file to write; its folder is created."""
    target = chosen or (HERE if record else SCRATCH) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    return target
