"""Arguments and options several commands take alike: one definition each, so their help cannot
drift apart. Imports nothing of crossctr, so any package's commands can use it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["DATASET_CACHE", "FILE", "FOLDER", "NO_PROGRESS", "RUN_DIR", "format_option", "out_folder"]

Decorator = Callable[[Any], Any]

FOLDER = click.Path(path_type=Path, file_okay=False)
FILE = click.Path(path_type=Path, dir_okay=False)
RUN_DIR = click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
NO_PROGRESS = click.option(
    "--no-progress", is_flag=True, help="Hide progress bars (they are hidden anyway when stderr is not a terminal)."
)
DATASET_CACHE = Path("runs/datasets")  # where `dataset` and `experiment` build named datasets once and reuse them


def out_folder(help: str, default: Path | None = None) -> Decorator:
    """`--out FOLDER`, the folder a command writes: required unless it has a default."""
    return click.option(
        "--out", type=FOLDER, default=default, required=default is None, show_default=default is not None, help=help
    )


def format_option(choices: Sequence[str], help: str) -> Decorator:
    """`--format` (parameter `fmt`): one of `choices`, the first by default."""
    return click.option(
        "--format", "fmt", type=click.Choice(list(choices)), default=choices[0], show_default=True, help=help
    )
