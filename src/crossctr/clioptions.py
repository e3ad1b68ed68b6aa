"""Arguments and options several commands take alike: one definition each, so their help cannot
drift apart. Imports nothing of crossctr, so any package's commands can use it."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["FILE", "FOLDER", "NO_PROGRESS", "RUN_DIR"]

FOLDER = click.Path(path_type=Path, file_okay=False)
FILE = click.Path(path_type=Path, dir_okay=False)
RUN_DIR = click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
NO_PROGRESS = click.option(
    "--no-progress", is_flag=True, help="Hide progress bars (they are hidden anyway when stderr is not a terminal)."
)
