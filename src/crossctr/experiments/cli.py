"""`crossctr experiment NAME --dataset D`: run a named grid, write results.jsonl, render the report."""

from __future__ import annotations

import logging
import re
import shlex
import sys
from pathlib import Path

import click

from crossctr.clihelp import RegistryCommand
from crossctr.clioptions import DATASET_CACHE, FOLDER

__all__ = ["experiment"]

log = logging.getLogger(__name__)


def _ints(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 0,1,2; got {value!r}") from None


def _names(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _slug(dataset: str) -> str:
    """`simulator` -> simulator; `data/my-logs/dataset.yaml` -> my-logs."""
    p = Path(dataset)
    if p.suffix in (".yaml", ".yml"):
        p = p.parent
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", p.name or "dataset")


def _command(
    name: str,
    dataset: str | None,
    data_root: Path | None,
    out: Path,
    seeds: tuple[int, ...] | None,
    only: tuple[str, ...] | None,
    keep_runs: bool,
    methods: tuple[str, ...] | None = None,
) -> str:
    """The command line that reproduces this invocation (options spelled out)."""
    args = ["crossctr", "experiment", name]
    if dataset is not None:
        args += ["--dataset", dataset]
    if data_root is not None:
        args += ["--data-root", str(data_root)]
    args += ["--out", str(out)]
    if seeds is not None:
        args += ["--seeds", ",".join(map(str, seeds))]
    if only is not None:
        args += ["--only", ",".join(only)]
    if methods is not None:
        args += ["--methods", ",".join(methods)]
    if keep_runs:
        args.append("--keep-runs")
    return shlex.join(args)


@click.command(cls=RegistryCommand)
@click.argument("name")
@click.option("--dataset", help="A registered dataset (<DATASETS>) or the path of a dataset.yaml.")
@click.option(
    "--data-root",
    type=FOLDER,
    help="Folder holding the raw public data sets (MovieLens, MIND).",
)
@click.option(
    "--out",
    type=FOLDER,
    help="Results folder; default runs/experiments/NAME-DATASET.",
)
@click.option(
    "--cache-dir",
    type=FOLDER,
    default=DATASET_CACHE,
    show_default=True,
    help="Where named data sets are built once and reused.",
)
@click.option("--seeds", help="Comma-separated seeds, e.g. 0,1,2; default: the experiment's.")
@click.option(
    "--only",
    help="Comma-separated tables to run: table1, table2, table3, table4, figure4 (the report still shows every table).",
)
@click.option(
    "--methods", help="Comma-separated methods to run (with the tuning runs that decide their settings); default: all."
)
@click.option("--dry-run", is_flag=True, help="List the planned runs and which are done; train nothing.")
@click.option(
    "--render-only", is_flag=True, help="Only rewrite report.md, report.json and figure4.png from results.jsonl."
)
@click.option(
    "--keep-runs", is_flag=True, help="Keep each run's weights (deleted by default; metrics stay in results.jsonl)."
)
@click.option(
    "--progress/--no-progress",
    default=False,
    show_default=True,
    help="Per-epoch progress bars of each run (off by default: several "
    "runs share the terminal; never when stderr is not a terminal).",
)
@click.option(
    "--publish",
    type=FOLDER,
    help="With --render-only: also copy the report, figure and results.jsonl to this folder, the command's "
    "--data-root shown as <data-root>.",
)
def experiment(
    name: str,
    dataset: str | None,
    data_root: Path | None,
    out: Path | None,
    cache_dir: Path,
    seeds: str | None,
    only: str | None,
    methods: str | None,
    dry_run: bool,
    render_only: bool,
    keep_runs: bool,
    progress: bool,
    publish: Path | None,
) -> None:
    """Run the experiment grid NAME (a packaged experiment or a YAML path) on one dataset; resumable.

    Each finished run is one line of OUT/results.jsonl; rerunning skips what is there.
    Writes OUT/report.md, OUT/report.json and OUT/figure4.png at the end. The packaged
    experiments:

    <EXPERIMENT_LIST>
    """
    from crossctr.experiments.grid import load_experiment

    seed_list, only_list, method_list = _ints(seeds), _names(only), _names(methods)
    if out is None:
        if dataset is None:
            raise click.UsageError("give --dataset (or --out of an earlier run with --render-only)")
        out = Path("runs/experiments") / f"{Path(name).stem}-{_slug(dataset)}"
    # The report covers the whole grid, so it names the command that runs (or resumes) all of
    # it; --only and --methods only narrow what this invocation trains.
    command = _command(name, dataset, data_root, out, seed_list, None, keep_runs, None)
    if publish is not None and not render_only:
        raise click.UsageError("--publish goes with --render-only (render the finished results, then publish them)")

    if render_only:
        from crossctr.experiments.render import publish_report, render_report

        if publish is not None:
            click.echo(f"published: {', '.join(str(p) for p in publish_report(out, publish))}")
            return
        render_report(out, command=shlex.join(["crossctr", "experiment", name, "--out", str(out), "--render-only"]))
        click.echo(f"report: {out / 'report.md'}, {out / 'report.json'}, {out / 'figure4.png'}")
        return
    if dataset is None:
        from crossctr.data.registry import DATASETS

        raise click.UsageError(
            f"--dataset is required: a registered dataset ({', '.join(DATASETS)}) or a dataset.yaml path"
        )
    exp = load_experiment(name)
    from crossctr.data.registry import resolve_dataset  # written by the data team; imported only when needed
    from crossctr.experiments.runner import run_experiment

    dataset_yaml = resolve_dataset(dataset, cache_dir, data_root)
    summary = run_experiment(
        exp,
        dataset_yaml,
        out,
        seeds=seed_list,
        only=only_list,
        methods=method_list,
        dry_run=dry_run,
        keep_runs=keep_runs,
        progress=progress and sys.stderr.isatty(),
        command=command,
    )
    if dry_run:
        for line in summary.listing:
            click.echo(line)
        click.echo(f"{summary.planned} runs planned, {summary.done_before} already in {out / 'results.jsonl'}")
        return
    click.echo(
        f"{summary.planned} runs: {summary.done_before} were done, "
        f"{summary.trained} trained, {summary.reused} reused; {summary.seconds:.0f} s"
    )
    click.echo(f"report: {out / 'report.md'}, {out / 'report.json'}, {out / 'figure4.png'}")
