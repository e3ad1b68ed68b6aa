"""Serving commands: `crossctr predict | export | serve` (registered in crossctr.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from crossctr.clioptions import FILE, NO_PROGRESS, RUN_DIR, format_option, out_folder

if TYPE_CHECKING:
    from crossctr.serving.export import ExportFormat

__all__ = ["predict", "export", "serve"]


@click.command()
@RUN_DIR
@click.argument("input_path", metavar="INPUT", type=FILE)
@click.option(
    "--out",
    "output",
    type=FILE,
    required=True,
    help="Output file; .parquet, .csv or .tsv sets the format.",
)
@click.option(
    "--batch-rows",
    type=int,
    default=65_536,
    show_default=True,
    help="Rows read, scored and written at a time (bounds memory).",
)
@click.option("--score-column", default="score", show_default=True, help="Name of the added probability column.")
@NO_PROGRESS
@click.option(
    "--encoding", default=None, help="Text encoding of a CSV INPUT (e.g. latin-1); default: the dataset's `encoding:`."
)
@click.option(
    "--domain",
    default=None,
    help="The domain of every row, for an INPUT without a domain column (one platform's file).",
)
def predict(
    run_dir: Path,
    input_path: Path,
    output: Path,
    batch_rows: int,
    score_column: str,
    no_progress: bool,
    encoding: str | None,
    domain: str | None,
) -> None:
    """Score every row of INPUT (CSV/Parquet) with RUN_DIR; write the rows plus a score column.

    A text INPUT is read with the run's dataset `format:` (delimiter, header, columns) and encoding.
    """
    from crossctr.progress import show_progress
    from crossctr.serving.predict import predict_file

    res = predict_file(
        run_dir,
        input_path,
        output,
        batch_rows=batch_rows,
        score_column=score_column,
        progress=show_progress(no_progress),
        encoding=encoding,
        domain=domain,
    )
    click.echo(
        f"scored {res.rows} rows in {res.seconds:.1f} s ({res.rows / max(res.seconds, 1e-9):,.0f} rows/s): {res.output}"
    )


@click.command()
@RUN_DIR
@out_folder("Export folder to write.")
@format_option(["onnx", "torchscript"], "ONNX (served with onnxruntime) or TorchScript.")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (17 or later).")
@click.option(
    "--parity-rows",
    type=int,
    default=4096,
    show_default=True,
    help="Random rows scored by both the export and PyTorch.",
)
@click.option(
    "--bench-seconds", type=float, default=0.5, show_default=True, help="Time per throughput measurement; 0 skips it."
)
@click.option(
    "--bench-threads", type=int, default=1, show_default=True, help="Intra-op threads of both engines while measuring."
)
def export(
    run_dir: Path, out: Path, fmt: ExportFormat, opset: int, parity_rows: int, bench_seconds: float, bench_threads: int
) -> None:
    """Export RUN_DIR's inference graph (features, domain) -> probability, checked against PyTorch."""
    from crossctr.serving.export import ExportError, export_run

    try:
        res = export_run(
            run_dir,
            out,
            format=fmt,
            opset=opset,
            parity_rows=parity_rows,
            bench_seconds=bench_seconds,
            bench_threads=bench_threads,
        )
    except ExportError as err:
        raise click.ClickException(str(err)) from None
    click.echo(
        f"parity: max abs diff {res.max_abs_diff:.3g} over {parity_rows} rows (tolerance "
        f"{res.manifest['parity']['tolerance']:g})"
    )
    if res.rows_per_s:
        click.echo(f"scoring speed, {bench_threads} intra-op thread(s) each:")
    for key, rate in res.rows_per_s.items():
        engine, batch = key.split("@")
        click.echo(f"  {engine:>11} batch {batch:>5}: {rate:>12,.0f} rows/s")
    click.echo(
        f"export folder: {out} ({res.manifest['file']}, {res.manifest['graph']} graph of "
        f"{len(res.manifest['members'])} member(s))"
    )


@click.command()
@click.argument("source", metavar="RUN_DIR_OR_EXPORT", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on; 0.0.0.0 for every interface."
)
@click.option("--port", type=int, default=8000, show_default=True, help="TCP port to listen on.")
@click.option(
    "--engine",
    type=click.Choice(["auto", "onnx", "torch"]),
    default="auto",
    show_default=True,
    help="auto: onnxruntime when installed (a run folder is exported in memory), else PyTorch.",
)
@click.option(
    "--max-body-bytes", type=int, default=1 << 20, show_default=True, help="Larger request bodies get 413, unparsed."
)
@click.option(
    "--max-rows", type=int, default=1000, show_default=True, help="Most rows (score) or items (rank) per request."
)
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="Intra-op threads per request; concurrency comes from concurrent requests, 0 = all cores.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="uvicorn's log level; debug also logs every request.",
)
def serve(
    source: Path,
    host: str,
    port: int,
    engine: Literal["auto", "onnx", "torch"],  # click.Choice checked it
    max_body_bytes: int,
    max_rows: int,
    threads: int | None,
    log_level: str,
) -> None:
    """Serve a run folder or an ONNX export over HTTP: /v1/score, /v1/rank, /v1/model, /healthz."""
    import uvicorn

    from crossctr.serving.app import ServeLimits, create_app
    from crossctr.serving.export import ExportError

    try:
        app = create_app(
            source,
            engine=engine,
            limits=ServeLimits(max_body_bytes=max_body_bytes, max_rows=max_rows),
            threads=threads or None,
        )
    except ExportError as err:
        raise click.ClickException(str(err)) from None
    model = app.state.model
    click.echo(
        f"serving {model.source} ({model.kind}, engine {model.engine.name}, version {model.version}) on http://{host}:{port}",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
