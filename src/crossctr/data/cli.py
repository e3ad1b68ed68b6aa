"""`crossctr prepare` and `crossctr inspect`: a user's click log, at any size, before training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from crossctr.clioptions import NO_PROGRESS, out_folder

if TYPE_CHECKING:
    from crossctr.data.prepare import PrepareOptions

__all__ = ["prepare_command", "inspect_command"]

_YAML = click.Path(path_type=Path, exists=True, dir_okay=False)


def _options(max_memory: str, batch_rows: int | None, no_progress: bool, **flags: bool) -> PrepareOptions:
    from crossctr.data.prepare import PrepareOptions, parse_memory
    from crossctr.progress import show_progress

    return PrepareOptions(
        max_memory=parse_memory(max_memory), batch_rows=batch_rows, progress=show_progress(no_progress), **flags
    )


_memory = click.option(
    "--max-memory",
    default="2GB",
    show_default=True,
    help="Resident memory the whole process may use, e.g. 2GB, 512MB, 4GiB.",
)
_batch = click.option(
    "--batch-rows", type=int, default=None, help="Rows per record batch (default: derived from --max-memory)."
)


@click.command("prepare")
@click.argument("dataset_yaml", type=_YAML)
@out_folder("Prepared folder to write (or reuse when the inputs are unchanged).")
@_memory
@_batch
@click.option("--force", is_flag=True, help="Rebuild even when the inputs are unchanged.")
@click.option(
    "--allow-constant-features",
    "allow_constant",
    is_flag=True,
    help="Keep a constant categorical or all-missing numeric feature (warn instead of failing).",
)
@click.option(
    "--allow-single-class",
    is_flag=True,
    help="Keep a domain whose split has one label class only (warn instead of failing).",
)
@NO_PROGRESS
def prepare_command(
    dataset_yaml: Path,
    out: Path,
    max_memory: str,
    batch_rows: int | None,
    force: bool,
    allow_constant: bool,
    allow_single_class: bool,
    no_progress: bool,
) -> None:
    """Encode a dataset (CSV/Parquet file, folder or glob of shards) into memory-mappable arrays.

    Point a run config's `dataset:` at OUT to train from it.
    """
    from crossctr.data.prepare import prepare_dataset

    opts = _options(
        max_memory,
        batch_rows,
        no_progress,
        force=force,
        allow_constant=allow_constant,
        allow_single_class=allow_single_class,
    )
    result = prepare_dataset(dataset_yaml, out, opts)
    rows = ", ".join(f"{k} {v:,}" for k, v in result.rows.items())
    if result.reused:
        click.echo(f"unchanged inputs: reusing {out} ({rows})")
    else:
        total = sum(result.rows.values())
        click.echo(
            f"prepared {rows} rows into {out} in {result.seconds:.1f} s "
            f"({total / max(result.seconds, 1e-9):,.0f} rows/s end to end, two passes)"
        )


@click.command("inspect")
@click.argument("dataset_yaml", type=_YAML)
@out_folder("Folder for inspect.md, inspect.json and the PNG charts.")
@_memory
@_batch
@NO_PROGRESS
def inspect_command(dataset_yaml: Path, out: Path, max_memory: str, batch_rows: int | None, no_progress: bool) -> None:
    """Rows and label rates per domain, missing / OOV rates and cardinalities per feature."""
    from crossctr.data.inspect import inspect_dataset

    report = inspect_dataset(dataset_yaml, out, _options(max_memory, batch_rows, no_progress))
    click.echo(report.markdown)
    click.echo(f"report: {', '.join(str(p) for p in report.files)}")
