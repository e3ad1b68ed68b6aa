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
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from crossctr.data.io import (
    DataError,
    _as_float,
    _check_magic,
    _csv_error,
    _csv_header,
    _csv_parse_options,
    _csv_read_options,
    _not_found,
    _csv_source,
)
from crossctr.schema import DatasetSchema, FormatSpec
from crossctr.training.run import Predictor

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
            raise DataError(f"encoding {encoding!r} is not a text encoding Python knows (e.g. utf-8, latin-1, cp1252)") from None
    return fmt.model_copy(update={"encoding": encoding or fmt.encoding or schema.encoding})


def _batches(path: Path, schema: DatasetSchema, batch_rows: int, fmt: FormatSpec) -> tuple[pa.Schema, int | None, Iterator[pa.RecordBatch]]:
    """(arrow schema, row count if known, batch iterator) of a file, opened for streaming."""
    kind = _kind(path, "input", fmt)
    if not path.is_file():
        raise _not_found(path)
    _check_magic(path, "parquet" if kind == "parquet" else "csv")
    encoding = fmt.encoding or "utf-8"
    try:
        if kind == "parquet":
            pf = pq.ParquetFile(path)
            return pf.schema_arrow, pf.metadata.num_rows, pf.iter_batches(batch_size=batch_rows)
        # Model columns are read as text, so a later block cannot be inferred differently from the
        # first, and `validate_table` types them as training does: its errors name the column and
        # the rows (a number column is given back as numbers in the output).
        types = {c: pa.string() for c in [schema.domain.column, *schema.raw_feature_columns()]}
        if fmt.kind is None and path.suffix.lower() == ".tsv":
            fmt = fmt.model_copy(update={"delimiter": fmt.delimiter or "\t"})
        names = _csv_header(path, fmt, encoding)
        # ~64 bytes a row is typical of click logs; the block size bounds memory either way
        reader = pacsv.open_csv(_csv_source(path, fmt), read_options=_csv_read_options(fmt, encoding, max(1 << 20, batch_rows * 64)),
                                parse_options=_csv_parse_options(path, fmt),
                                convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False))
        return reader.schema, None, _named_errors(reader, path, fmt, encoding, names)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError) as err:
        if kind == "parquet":
            raise DataError(f"{path}: cannot be read as Parquet: {err}") from None
        raise _csv_error(path, err, fmt, encoding) from None


def _named_errors(reader: Iterator[pa.RecordBatch], path: Path, fmt: FormatSpec, encoding: str, names: list[str]) -> Iterator[pa.RecordBatch]:
    """The reader's batches; a block that does not parse raises a DataError naming the column (not its index)."""
    while True:
        try:
            batch = next(reader, None)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError) as err:
            raise _csv_error(path, err, fmt, encoding, names) from None
        if batch is None:
            return
        yield batch


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


def _numbers_back(table: pa.Table, arrow_schema: pa.Schema, schema: DatasetSchema, source: str, offset: int) -> pa.Table:
    for i, name in enumerate(table.column_names):
        if pa.types.is_float64(arrow_schema.field(name).type) and pa.types.is_string(table.schema.field(name).type):
            table = table.set_column(i, name, _as_float(table.column(name).combine_chunks(), name, source, offset))
    return table


class _Writer:
    """Incremental Parquet / CSV writer into a temporary file, renamed into place on `commit`."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.kind = path, _kind(path, "output")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        if self.kind == "parquet":
            self.writer: Any = pq.ParquetWriter(self.tmp, schema)
        else:
            self.writer = pacsv.CSVWriter(str(self.tmp), schema, write_options=pacsv.WriteOptions(delimiter=_TEXT[f".{self.kind}"]))

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)

    def commit(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def predict_file(
    run_dir: str | Path,
    input: str | Path,
    output: str | Path,
    batch_rows: int = 65_536,
    score_column: str = SCORE_COLUMN,
    progress: bool = True,
    predictor: Predictor | None = None,
    encoding: str | None = None,
) -> PredictResult:
    """Write `input`'s rows plus a `score_column` of click probabilities to `output`.

    The output format follows `output`'s suffix (.parquet, .csv, .tsv). A missing model column
    is an error naming the file and the column, a row of an unknown domain an error naming the
    rows; unseen categories and missing values score (OOV and missing ids). A text input is read
    with the dataset's `format:` and encoding (as the training files were); `encoding` overrides
    the encoding.
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
    missing = [c for c in needed if c not in arrow_schema.names]
    if missing:
        raise DataError(f"{input}: missing column(s) {missing}; the model needs {needed}; the file has {arrow_schema.names}")
    if score_column in arrow_schema.names:
        raise DataError(f"{input}: already has a column {score_column!r}; choose another score column name")
    out_schema = arrow_schema.append(pa.field(score_column, pa.float64()))
    for task in predictor.task_names:  # a multi-task model scores its extra labels too
        out_schema = out_schema.append(pa.field(f"{score_column}_{task}", pa.float64()))
    taken = [n for n in out_schema.names[len(arrow_schema.names):] if n in arrow_schema.names]
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
            _check_domains(table, schema, str(input), rows)
            try:
                # Model columns only: a label column, if any, plays no part in scoring.
                enc = predictor.encode(table.select(needed), str(input))
            except DataError as err:
                if rows == 0:
                    raise
                raise DataError(f"{err} (row numbers count from data row {rows + 1}, where this batch starts)") from None
            probs = predictor.predict_encoded_all(enc)
            table = _numbers_back(table, arrow_schema, schema, str(input), rows)
            scored = table.append_column(score_column, pa.array(probs.pop("click"), pa.float64()))
            for task, p in probs.items():  # a multi-task model: one more column per extra label
                scored = scored.append_column(f"{score_column}_{task}", pa.array(p, pa.float64()))
            writer.write(scored)
            rows += table.num_rows
            bar.update(table.num_rows)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    writer.commit()
    seconds = time.perf_counter() - t0
    log.info("scored %d rows of %s in %.1f s", rows, input, seconds)
    return PredictResult(rows, seconds, output)
