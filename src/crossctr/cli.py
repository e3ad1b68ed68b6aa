"""Command-line interface: `crossctr demo | simulate | train | evaluate`."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from crossctr import __version__
from crossctr.clihelp import RegistryCommand
from crossctr.clioptions import DATASET_CACHE, FILE, FOLDER, NO_PROGRESS, RUN_DIR, format_option, out_folder
from crossctr.data.cli import inspect_command, prepare_command
from crossctr.data.io import DataError
from crossctr.experiments.cli import experiment
from crossctr.files import DiskFullError
from crossctr.schema import ConfigError
from crossctr.serving.cli import export, predict, serve

__all__ = ["main"]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


@click.group()
@click.version_option(__version__, prog_name="crossctr")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Cross-domain CTR prediction: CNAN-AT and the baselines it is compared with."""
    _setup_logging(verbose)


@cli.command()
@out_folder("Folder for data, runs and results.", Path("runs/demo"))
@click.option("--rows", type=int, default=150_000, show_default=True, help="Simulated rows over all three platforms.")
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Most training epochs of each model; default: the library's (train.epochs), early stopping ends sooner.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the simulator, the split and the models' initialisation.",
)
@NO_PROGRESS
def demo(out: Path, rows: int, epochs: int | None, seed: int, no_progress: bool) -> None:
    """Simulate 3 platforms, train CNAN-AT and Self-train, print per-platform AUC, draw attention.

    Says before training how long it should take on this machine (timed on a few batches).
    """
    from crossctr.demo import run_demo
    from crossctr.progress import show_progress

    result = run_demo(out, rows=rows, epochs=epochs, seed=seed, progress=show_progress(no_progress))
    click.echo(result.table)
    click.echo(f"\nresults: {out / 'results.md'}, {out / 'results.json'}; attention heatmap: {result.heatmap}")
    click.echo(f"wall time: {result.seconds:.0f} s")


@cli.command()
@out_folder("Folder to write data.parquet, dataset.yaml, planted.json.")
@click.option(
    "--rows",
    type=int,
    default=300_000,
    show_default=True,
    help="Rows over all three platforms, split in the paper's ratio A : B : C = 56,000 : 4,900 : 350.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated users, items and clicks.")
def simulate(out: Path, rows: int, seed: int) -> None:
    """Write a simulated three-platform click log as a user's dataset would look."""
    from crossctr.data.simulator import SimulatorConfig, write_simulated_dataset

    try:
        path = write_simulated_dataset(out, SimulatorConfig(rows=rows, seed=seed))
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    click.echo(f"dataset: {path}")


@cli.command(cls=RegistryCommand)
@click.argument("name")
@out_folder("Cache folder; the dataset goes to OUT/NAME-seedS-vV/.", DATASET_CACHE)
@click.option(
    "--data-root",
    type=FOLDER,
    help="Folder holding the raw public data (movielens-1m/, ...); default $CROSSCTR_DATA_ROOT.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random split (and of the simulator).")
def dataset(name: str, out: Path, data_root: Path | None, seed: int) -> None:
    """Write a registered dataset NAME as data.parquet + dataset.yaml (`list`: name them).

    Point a run config's `dataset:` at the printed YAML. The registered datasets:

    <DATASET_LIST>
    """
    from crossctr.data.registry import describe, resolve_dataset
    from crossctr.schema import ConfigError

    if name == "list":
        for n, about in describe().items():
            click.echo(f"{n:<24} {about}")
        return
    if name not in describe():
        raise click.UsageError(
            f"unknown dataset {name!r}; registered: {', '.join(describe())} (or `crossctr dataset list`)"
        )
    try:
        click.echo(f"dataset: {resolve_dataset(name, out, data_root, seed=seed)}")
    except ConfigError as err:
        raise click.UsageError(str(err)) from None


@cli.command(cls=RegistryCommand)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="Run config YAML (every key: docs/configuration.md or `crossctr config-reference`).",
)
@out_folder("Run folder to write.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT/checkpoint (same config and data).")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Train a new run in OUT although it holds one (its checkpoint is "
    "discarded); without it or --resume, a non-empty OUT is refused.",
)
@NO_PROGRESS
@click.option(
    "--tensorboard",
    "tensorboard_dir",
    type=FOLDER,
    help="Log loss per step and per-domain validation AUC / log loss per epoch to this TensorBoard folder "
    "(the `tensorboard` extra); the same as `train: {tensorboard: DIR}`.",
)
def train(
    config_path: Path, out: Path, resume: bool, overwrite: bool, no_progress: bool, tensorboard_dir: Path | None
) -> None:
    """Train a model with a strategy from a run config; write a self-contained run folder.

    Models (`model: {name: ...}`): <MODELS>. Strategies (`strategy: {name: ...}`): <STRATEGIES>.
    Under `torchrun --nproc-per-node N -m crossctr train ...` it trains data-parallel.
    """
    from crossctr.evaluation.report import auc_table
    from crossctr.training.checkpoint import CheckpointError
    from crossctr.training.distributed import init_from_env, shutdown
    from crossctr.training.run import RunConfig, check_out_folder, train_run

    cfg = RunConfig.from_yaml(config_path)
    check_out_folder(out, resume, overwrite)  # before reading data: a non-empty OUT needs --resume or --overwrite
    update: dict[str, object] = {}
    if no_progress:
        update["progress"] = False
    if tensorboard_dir is not None:
        update["tensorboard"] = str(tensorboard_dir)
    if update:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=update)})
    info = init_from_env(cfg.train.device)
    if not info.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one rank reports
    try:
        data = None
        if info.world == 1:  # say how long it will take before it starts (a few steps timed here)
            from crossctr.data.prepare import load_dataset
            from crossctr.training.eta import estimate_run
            from crossctr.training.run import restrict_domains

            data = load_dataset(Path(cfg.dataset))
            scoped = restrict_domains(data, cfg.domains) if cfg.domains is not None else data
            click.echo(f"estimated training time: {estimate_run(cfg, scoped).text}", err=True)
        result = train_run(cfg, out, data, resume=resume)
    except (FloatingPointError, CheckpointError) as err:
        raise click.ClickException(str(err)) from None
    finally:
        shutdown()
    if not info.is_main:
        return
    doms = [k for k in result.metrics["test"] if k != "overall"]
    click.echo(auc_table({out.name: result.metrics["test"]}, [*doms, "overall"]))
    if len(result.result.members) > 1:  # which model scores which domain (also in config.json: route)
        click.echo("models: " + ", ".join(f"{d} by {m}" for d, m in result.result.route.items()))
    click.echo(f"run folder: {out}")


@cli.command()
@RUN_DIR
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="A labelled CSV/Parquet file to score instead. The run's training file: only the rows of its test split "
    "(matched against the split the run recorded). Any other file: all its rows, the table headed with "
    "the file's name, with a warning when it holds rows the run trained or validated on.",
)
def evaluate(run_dir: Path, data_path: Path | None) -> None:
    """Per-domain AUC and log loss of a run: on its test split by default, or on the rows of a labelled file."""
    from crossctr.evaluation.evaluate import evaluate_file, stored_test
    from crossctr.evaluation.report import auc_table

    ev = stored_test(run_dir) if data_path is None else evaluate_file(run_dir, data_path)
    for note in ev.notes:
        click.echo(note)
    for warning in ev.warnings:
        click.echo(f"warning: {warning}", err=True)
    doms = [k for k in ev.metrics if k != "overall"]
    click.echo(auc_table({run_dir.name: ev.metrics}, [*doms, "overall"], rows_of=ev.rows_of))
    click.echo(auc_table({run_dir.name: ev.metrics}, [*doms, "overall"], metric="logloss", rows_of=ev.rows_of))


@cli.command("split")
@RUN_DIR
@out_folder("Folder to write valid.parquet and test.parquet (or .csv).")
@click.option(
    "--data",
    "dataset",
    type=click.Path(path_type=Path, exists=True),
    help="The dataset YAML the run used; default: the path in the run's "
    "config.json (needed when the run trained from a prepared folder).",
)
@format_option(["parquet", "csv"], "File format of the written rows.")
def split_command(run_dir: Path, out: Path, dataset: Path | None, fmt: str) -> None:
    """Write the raw validation and test rows of a run, to score them with `predict` or elsewhere.

    The rows are re-split from the run's dataset and checked against the split the run recorded.
    """
    from crossctr.evaluation.evaluate import write_run_splits

    for name, (path, rows) in write_run_splits(run_dir, out, dataset, fmt).items():
        click.echo(f"{name}: {rows:,} rows -> {path}")


@cli.command()
@RUN_DIR
@click.option("--out", type=FILE, help="PNG to write; default RUN_DIR/learning_curves.png.")
def plot(run_dir: Path, out: Path | None) -> None:
    """Draw a run's learning curves per domain (training loss, validation AUC
    and log loss by epoch) from history.json."""
    from crossctr.evaluation.report import learning_curves

    path = run_dir / "history.json"
    if not path.is_file():
        raise click.ClickException(f"{run_dir}: no history.json (not a finished run folder)")
    try:
        png = learning_curves(
            json.loads(path.read_text()), out or run_dir / "learning_curves.png", f"learning curves of {run_dir.name}"
        )
    except ValueError as err:
        raise click.ClickException(f"{path}: {err}") from None
    click.echo(f"learning curves: {png}")


@cli.command("config-reference")
@click.option(
    "--out",
    type=FILE,
    help="Write it to this file (the repository keeps it as docs/configuration.md); default: print it.",
)
@click.option(
    "--check",
    is_flag=True,
    help="With --out: write nothing, exit 1 when the file differs from what the code generates.",
)
def config_reference(out: Path | None, check: bool) -> None:
    """Every key of a dataset YAML, run config and experiment YAML: type, default, allowed values, why."""
    from crossctr.configref import reference

    text = reference()
    if out is None:
        click.echo(text, nl=False)
    elif check:
        if not out.is_file() or out.read_text(encoding="utf-8") != text:
            raise click.ClickException(f"{out} is out of date; regenerate it: crossctr config-reference --out {out}")
        click.echo(f"{out} is current")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}")


# Commands kept with their packages: experiments, serving, data.
cli.add_command(experiment)
cli.add_command(predict)
cli.add_command(export)
cli.add_command(serve)
cli.add_command(prepare_command)
cli.add_command(inspect_command)


def main() -> None:
    """Entry point: user errors print one clear line, not a traceback."""
    # OpenMP threads wait passively (sleep at a barrier instead of spinning): with several jobs on
    # the cores, spinning made one job 28x slower than alone. Read when torch loads its OpenMP
    # runtime, so set here, before any command imports torch; a value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        cli(standalone_mode=True)
    except (ConfigError, DataError, DiskFullError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
