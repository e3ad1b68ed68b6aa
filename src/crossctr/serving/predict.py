"""Score a CSV or Parquet file with a run folder, streamed in bounded memory.

    input rows (any columns) -> the same rows, in order, plus a `score` column (click probability)

Parquet is read by record batches (`ParquetFile.iter_batches`), CSV with pyarrow's streaming
reader (`pyarrow.csv.open_csv`, one block at a time); each batch is encoded with the run's
encoders (`Predictor.encode`: unseen categories get the OOV id and still score), scored, and
appended to a `ParquetWriter` / CSV writer. At most one batch is in memory. The output is
written to a temporary file beside it and renamed at the end, so a failed run leaves no
half-written file.

Example:
    >>> from crossctr.serving.predict import predict_file               # doctest: +SKIP
    >>> predict_file("runs/demo/cnan", "new.parquet", "scored.parquet")  # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from crossctr.data.io import DataError, check_file, open_text_batches, parse_numbers
from crossctr.files import DiskFullError, disk_full, human_bytes, remove_stale
from crossctr.inference import Predictor
from crossctr.inference.runfolder import commit_temp_file, temp_file_beside
from crossctr.schema import DatasetSchema, FormatSpec

__all__ = ["PredictResult", "predict_file", "SCORE_COLUMN"]

log = logging.getLogger(__name__)

SCORE_COLUMN = "score"
_PARQUET = (".parquet", ".pq")
_TEXT = {".csv": ",", ".tsv": "\t"}
_SAMPLE = 5  # offending rows quoted in an error message


@dataclass
class PredictResult:
    rows: int
    seconds: float
    output: Path


def _kind(path: Path, what: str, fmt: FormatSpec | None = None) -> str:
    suffix = path.suffix.lower()
    if suffix in _PARQUET:
        return "parquet"
    if suffix in _TEXT:
        return suffix[1:]
    if what == "input" and fmt is not None and fmt.kind == "csv":  # the dataset's text format, any extension
        return "csv"
    raise DataError(f"{path}: unknown {what} file type {suffix!r}; use .csv, .tsv or .parquet")


def _input_format(schema: DatasetSchema, encoding: str | None) -> FormatSpec:
    """The text layout of an input file: the dataset's `format:` (delimiter, header, columns,
    comment, quote) and encoding, unless `encoding` overrides it."""
    fmt = schema.format or FormatSpec()
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise DataError(
                f"encoding {encoding!r} is not a text encoding Python knows (e.g. utf-8, latin-1, cp1252)"
            ) from None
    return fmt.model_copy(update={"encoding": encoding or fmt.encoding or schema.encoding})


def _batches(
    path: Path, schema: DatasetSchema, batch_rows: int, fmt: FormatSpec
) -> tuple[pa.Schema, int | None, Iterator[pa.RecordBatch]]:
    """(arrow schema, row count if known, batch iterator) of a file, opened for streaming."""
    kind = _kind(path, "input", fmt)
    check_file(path, "parquet" if kind == "parquet" else "csv")
    if kind == "parquet":
        try:
            pf = pq.ParquetFile(path)
            return pf.schema_arrow, pf.metadata.num_rows, pf.iter_batches(batch_size=batch_rows)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
            raise DataError(f"{path}: cannot be read as Parquet: {err}") from None
    # Model columns are read as text, so a later block cannot be inferred differently from the
    # first, and `validate_table` types them as training does: its errors name the column and
    # the rows (a number column is given back as numbers in the output).
    types = {c: pa.string() for c in [schema.domain.column, *schema.raw_feature_columns()]}
    if fmt.kind is None and path.suffix.lower() == ".tsv":
        fmt = fmt.model_copy(update={"delimiter": fmt.delimiter or "\t"})
    # ~64 bytes a row is typical of click logs; the block size bounds memory either way
    arrow_schema, batches = open_text_batches(path, fmt, types, max(1 << 20, batch_rows * 64))
    return arrow_schema, None, batches


def _rows(mask: np.ndarray, offset: int) -> str:
    """Offending 1-based data rows of the whole file; `mask` covers the batch starting at `offset`."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(offset + i + 1) for i in idx[:_SAMPLE])
    more = f" and {len(idx) - _SAMPLE} more among rows {offset + 1}-{offset + len(mask)}" if len(idx) > _SAMPLE else ""
    return f"rows {shown}{more}"


def _check_domains(table: pa.Table, schema: DatasetSchema, source: str, offset: int) -> None:
    """Unknown domains, reported with row numbers of the whole file (1-based data rows)."""
    dom = table.column(schema.domain.column).combine_chunks().cast(pa.string())
    known = pc.is_in(dom, value_set=pa.array(schema.domain.values)).to_numpy(zero_copy_only=False)
    known &= ~dom.is_null().to_numpy(zero_copy_only=False)
    if not known.all():
        seen = sorted({str(v) for v in np.asarray(dom.to_pylist(), dtype=object)[~known][:50]})
        raise DataError(
            f"{source}: column {schema.domain.column!r} (domain) holds values the model was not trained on: "
            f"{seen[:_SAMPLE]} on {_rows(~known, offset)}; the model knows {list(schema.domain.values)}. "
            "Drop those rows or map them to a known domain."
        )


def _numeric_types(arrow_schema: pa.Schema, schema: DatasetSchema) -> pa.Schema:
    """A text input's numeric model columns, read as text, are written back as float64."""
    numeric = {c for c, is_num in schema.raw_feature_columns().items() if is_num}
    for i, field in enumerate(arrow_schema):
        if field.name in numeric and pa.types.is_string(field.type):
            arrow_schema = arrow_schema.set(i, pa.field(field.name, pa.float64()))
    return arrow_schema


def _numbers_back(
    table: pa.Table, arrow_schema: pa.Schema, schema: DatasetSchema, source: str, offset: int
) -> pa.Table:
    for i, name in enumerate(table.column_names):
        if pa.types.is_float64(arrow_schema.field(name).type) and pa.types.is_string(table.schema.field(name).type):
            table = table.set_column(i, name, parse_numbers(table.column(name).combine_chunks(), name, source, offset))
    return table


class _Writer:
    """Incremental Parquet / CSV writer into a temporary file, renamed into place on `commit`.

    The temporary file `.NAME.<pid>-XXXX.tmp` carries the writer's pid: a rerun removes the ones
    a killed predict left (their process is gone), and never reads them.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.kind = path, _kind(path, "output")
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path.parent, f".{path.name}.", suffix=".tmp")
        self.tmp = temp_file_beside(path)  # the mode the user's umask gives any new file
        if self.kind == "parquet":
            self.writer: Any = pq.ParquetWriter(self.tmp, schema)
        else:
            self.writer = pacsv.CSVWriter(
                str(self.tmp), schema, write_options=pacsv.WriteOptions(delimiter=_TEXT[f".{self.kind}"])
            )

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)

    def commit(self) -> None:
        self.writer.close()
        commit_temp_file(self.tmp, self.path)  # fsynced, renamed into place, folder fsynced

    def abort(self) -> None:
        try:
            self.writer.close()
        except OSError:
            pass  # closing flushes, and the disk may still be full: the file goes anyway
        finally:
            self.tmp.unlink(missing_ok=True)

    def written(self) -> int:
        try:
            return self.tmp.stat().st_size
        except OSError:
            return 0


def _full_message(output: Path, written: int, rows: int, input: Path) -> str:
    size = input.stat().st_size if input.is_file() else 0
    return (
        f"{output.parent}: the disk filled while writing {output.name}: {human_bytes(written)} ({written:,} bytes) of "
        f"output for {rows:,} rows were written before it; the whole output needs about as much space as the input "
        f"({human_bytes(size)}) plus the score column; free space "
        "or choose another --out (the partial file was removed)"
    )


def predict_file(
    run_dir: str | Path,
    input: str | Path,
    output: str | Path,
    batch_rows: int = 65_536,
    score_column: str = SCORE_COLUMN,
    progress: bool = True,
    predictor: Predictor | None = None,
    encoding: str | None = None,
    domain: str | None = None,
) -> PredictResult:
    """Write `input`'s rows plus a `score_column` of click probabilities to `output`.

    The output format follows `output`'s suffix (.parquet, .csv, .tsv). A missing model column
    is an error naming the file and the column, a row of an unknown domain an error naming the
    rows; unseen categories and missing values score (OOV and missing ids). A text input is read
    with the dataset's `format:` and encoding (as the training files were); `encoding` overrides
    the encoding. `domain`: the domain of every row of a file without a domain column (one
    platform's file of a dataset with `sources:`).
    """
    t0 = time.perf_counter()
    input, output = Path(input), Path(output)
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    if input.resolve() == output.resolve():
        raise DataError(f"{output}: the output would overwrite the input; choose another path")
    _kind(output, "output")
    predictor = predictor if predictor is not None else Predictor.load(run_dir)
    schema = predictor.encoder.schema
    arrow_schema, total, batches = _batches(input, schema, batch_rows, _input_format(schema, encoding))
    arrow_schema = _numeric_types(arrow_schema, schema)
    needed = [schema.domain.column, *schema.raw_feature_columns()]
    if domain is not None:
        if schema.domain.column in arrow_schema.names:
            raise DataError(
                f"{input}: has a domain column {schema.domain.column!r}; "
                "a domain for every row applies to files without one"
            )
        if domain not in schema.domain.values:
            raise DataError(f"domain {domain!r} is not one the model was trained on: {list(schema.domain.values)}")
    missing = [
        c for c in needed if c not in arrow_schema.names and not (c == schema.domain.column and domain is not None)
    ]
    if missing == [schema.domain.column]:
        raise DataError(
            f"{input}: no domain column {schema.domain.column!r}; if every row is of one domain, say which "
            f"(`crossctr predict --domain NAME`, one of {list(schema.domain.values)})"
        )
    if missing:
        raise DataError(
            f"{input}: missing column(s) {missing}; the model needs {needed}; the file has {arrow_schema.names}"
        )
    if score_column in arrow_schema.names:
        raise DataError(f"{input}: already has a column {score_column!r}; choose another score column name")
    out_schema = arrow_schema.append(pa.field(score_column, pa.float64()))
    for task in predictor.task_names:  # a multi-task model scores its extra labels too
        out_schema = out_schema.append(pa.field(f"{score_column}_{task}", pa.float64()))
    taken = [n for n in out_schema.names[len(arrow_schema.names) :] if n in arrow_schema.names]
    if taken:
        raise DataError(f"{input}: already has column(s) {taken}; choose another score column name")
    writer = _Writer(output, out_schema)
    rows = 0
    bar = tqdm(total=total, unit="rows", unit_scale=True, desc=f"scoring {input.name}", disable=not progress)
    try:
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowInvalid, OSError) as err:  # a Parquet page that does not read
                raise DataError(f"{input}: after data row {rows}: {err}") from None
            except DataError as err:  # a CSV block that does not parse (named by _named_errors)
                raise DataError(f"{err} (after data row {rows})") from None
            if batch is None:
                break
            table = pa.Table.from_batches([batch])
            if domain is not None:  # rows of one domain, named by the caller, not by a column
                rows_in = table.append_column(schema.domain.column, pa.array([domain] * table.num_rows, pa.string()))
            else:
                rows_in = table
            _check_domains(rows_in, schema, str(input), rows)
            try:
                # Model columns only: a label column, if any, plays no part in scoring.
                enc = predictor.encode(rows_in.select(needed), str(input))
            except DataError as err:
                if rows == 0:
                    raise
                raise DataError(
                    f"{err} (row numbers count from data row {rows + 1}, where this batch starts)"
                ) from None
            probs = predictor.predict_encoded_all(enc)
            table = _numbers_back(table, arrow_schema, schema, str(input), rows)
            scored = table.append_column(score_column, pa.array(probs.pop("click"), pa.float64()))
            for task, p in probs.items():  # a multi-task model: one more column per extra label
                scored = scored.append_column(f"{score_column}_{task}", pa.array(p, pa.float64()))
            writer.write(scored)
            rows += table.num_rows
            bar.update(table.num_rows)
        writer.commit()
    except BaseException as err:
        written = writer.written()
        writer.abort()
        if disk_full(err):
            raise DiskFullError(_full_message(output, written, rows, input)) from None
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    log.debug("scored %d rows of %s in %.1f s", rows, input, seconds)  # the CLI prints the summary
    return PredictResult(rows, seconds, output)
