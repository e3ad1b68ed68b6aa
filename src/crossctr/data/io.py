"""Read a user's click log (CSV or Parquet) into an Arrow table and check it against the schema.

Every problem is reported as a `DataError` naming the file, the column and a sample of the
offending row numbers (1-based data rows, header excluded), never as a stack trace from
deep inside pyarrow.

A dataset's `path` is one file, a folder of shards or a glob; `resolve_input_files` lists the
files (in name order), `check_input_files` reads only their headers / footers and checks them
against the schema and against each other, and `iter_file_batches` streams one file in record
batches for the bounded-memory `crossctr prepare`.

Policies:
    extra columns     ignored; one warning lists them per file
    a shard with a header but no rows, among other shards: skipped with a warning
    shards whose column types disagree (e.g. brand int64 in one, string in another): an error,
                      because 7 and "7.0" would silently become different categories; only
                      integer vs floating is accepted, for numeric, label and split columns
"""

from __future__ import annotations

import csv
import glob
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from crossctr.schema import DatasetSchema, FeatureKind, TimeSplit

__all__ = [
    "DataError",
    "read_table",
    "validate_table",
    "load_dataset_table",
    "InputFile",
    "resolve_input_files",
    "check_input_files",
    "iter_file_batches",
]

log = logging.getLogger(__name__)

_SAMPLE = 5  # offending rows quoted in an error message
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".txt": "csv"}
# Text that means "no value" in a numeric or label column: Arrow's CSV null markers and "None".
_NULL_TOKENS = pa.array(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                         "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null", "None"])


class DataError(ValueError):
    """Input data does not match its schema; the message names file, column and rows."""


def _rows(mask: np.ndarray, offset: int = 0) -> str:
    idx = np.flatnonzero(mask) + offset
    shown = ", ".join(str(i + 1) for i in idx[:_SAMPLE])
    more = f" and {len(idx) - _SAMPLE} more" if len(idx) > _SAMPLE else ""
    return f"rows {shown}{more}"


def _kind(path: Path) -> str:
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type {path.suffix.lower()!r}; use .csv, .tsv or .parquet")
    return kind


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _csv_rows_with(path: Path, encoding: str, bad: Callable[[list[str], list[str]], bool]) -> list[int]:
    """1-based data rows of a CSV file for which bad(fields, header) holds (error path only)."""
    found: list[int] = []
    with open(path, newline="", encoding=encoding, errors="replace") as fh:
        reader = csv.reader(fh, delimiter=_delimiter(path))
        header = next(reader, [])
        for i, fields in enumerate(reader, start=1):
            if bad(fields, header):
                found.append(i)
                if len(found) > _SAMPLE:
                    break
    return found


def _undecodable_rows(path: Path, encoding: str) -> list[int]:
    """1-based data rows (lines after the header) that are not valid `encoding` text."""
    found: list[int] = []
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                found.append(i)  # line 0 is the header, so line i is data row i
                if len(found) > _SAMPLE:
                    break
    return found


def _fmt_rows(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_SAMPLE])
    return f"rows {shown}{' and more' if len(rows) > _SAMPLE else ''}"


def _csv_error(path: Path, err: Exception, encoding: str) -> DataError:
    """Turn pyarrow's CSV error into one that names the file, the column and the rows."""
    msg = str(err)
    if "Empty CSV file" in msg:
        return DataError(f"{path}: the file is empty (not even a header line); remove it or write the data")
    ragged = re.search(r"Expected (\d+) columns, got (\d+)", msg)
    if ragged:
        rows = _csv_rows_with(path, encoding, lambda fields, header: len(fields) != len(header))
        return DataError(
            f"{path}: {_fmt_rows(rows) if rows else 'some rows'} do not have as many fields as the header "
            f"({ragged.group(1)} columns; one row has {ragged.group(2)}). Fix the rows (a quoting problem or a "
            "missing separator) or drop them."
        )
    if "invalid UTF8" in msg or "UnicodeDecodeError" in msg or "decode" in msg.lower():
        col = re.search(r"CSV column #(\d+)", msg)
        where = ""
        if col:
            header = _csv_header(path, "latin-1")
            k = int(col.group(1))
            where = f" in column {header[k]!r}" if k < len(header) else ""
        rows = _undecodable_rows(path, encoding)
        return DataError(
            f"{path}: text that is not valid {encoding}{where} on {_fmt_rows(rows) if rows else 'some rows'}. "
            "Set `encoding:` in the dataset YAML to the file's encoding (e.g. latin-1 or cp1252), or re-save the file as UTF-8."
        )
    return DataError(f"{path}: cannot be read as CSV: {msg}")


def _csv_header(path: Path, encoding: str) -> list[str]:
    with open(path, newline="", encoding=encoding, errors="replace") as fh:
        return next(csv.reader(fh, delimiter=_delimiter(path)), [])


def read_table(path: str | Path, columns: list[str] | None = None, *, encoding: str = "utf-8") -> pa.Table:
    """Read a CSV or Parquet file; `columns`, if given, must all be present."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    kind = _kind(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); remove it or write the data")
    try:
        if kind == "parquet":
            table = pq.read_table(path)
        else:
            parse = pacsv.ParseOptions(delimiter=_delimiter(path))
            table = pacsv.read_csv(path, parse_options=parse, read_options=pacsv.ReadOptions(encoding=encoding))
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError) as err:
        if kind == "csv":
            raise _csv_error(path, err, encoding) from None
        raise DataError(f"{path}: cannot be read as {suffix[1:]} (truncated or corrupt?): {err}") from None
    if columns is not None:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {missing}; the file has {table.column_names}. "
                "Fix the dataset YAML or the file."
            )
        table = table.select(columns)
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows")
    return table


def validate_table(table: pa.Table, schema: DatasetSchema, source: str, row_offset: int = 0, *, scoring: bool = False) -> pa.Table:
    """Check label, domain and numeric columns; return the table with normalised types.

    Labels become int8 0/1, the domain column a string, numeric features float64 and
    categorical features strings (so '7' in a CSV and 7 in a Parquet file are one category).
    Multi-valued and hashed features become strings; the columns of a crossed feature that
    are not numeric features become strings. `row_offset` is the number of data rows of the
    file before this table, so that errors quote the rows of the file. `scoring`: rows to
    score, which need no split column and no extra-task labels.
    """
    needed = schema.required_columns()
    if scoring:  # rows to score need no split column and no extra-task labels
        needed = [c for c in needed if c not in schema.task_names and c != getattr(schema.split, "column", None)]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; it has {table.column_names}")
    cols: dict[str, pa.Array] = {}
    label = table.column(schema.label).combine_chunks()
    lab = _as_float(label, schema.label, source, row_offset, what="label").to_numpy(zero_copy_only=False)
    if np.isnan(lab).any():
        raise DataError(f"{source}: column {schema.label!r} (label) is missing on {_rows(np.isnan(lab), row_offset)}")
    bad = (lab != 0) & (lab != 1)
    if bad.any():
        vals = sorted({float(v) for v in lab[bad][:_SAMPLE]})
        raise DataError(f"{source}: column {schema.label!r} (label) must be 0 or 1; {_rows(bad, row_offset)} hold {vals}")
    cols[schema.label] = pa.array(lab.astype(np.int8))
    for task in [] if scoring else schema.task_names:  # 0/1, or missing: no label for that row
        t = _as_float(table.column(task).combine_chunks(), task, source, row_offset, what="label").to_numpy(zero_copy_only=False)
        bad = ~np.isnan(t) & (t != 0) & (t != 1)
        if bad.any():
            vals = sorted({float(v) for v in t[bad][:_SAMPLE]})
            raise DataError(f"{source}: column {task!r} (task label) must be 0, 1 or missing; {_rows(bad, row_offset)} hold {vals}")
        cols[task] = pa.array(t.astype(np.float32))

    dom = _text(table.column(schema.domain.column).combine_chunks(), schema.domain.column, source, row_offset)
    known = pc.is_in(dom, value_set=pa.array(schema.domain.values)).to_numpy(zero_copy_only=False)
    known &= ~dom.is_null().to_numpy(zero_copy_only=False)
    if not known.all():
        seen = sorted({str(v) for v in np.asarray(dom.filter(pa.array(~known)).slice(0, 50).to_pylist(), dtype=object)})
        raise DataError(
            f"{source}: column {schema.domain.column!r} (domain) holds values not declared in "
            f"domain.values {list(schema.domain.values)}: {seen[:_SAMPLE]} on {_rows(~known, row_offset)}. "
            "Add them to domain.values or drop those rows."
        )
    cols[schema.domain.column] = dom

    for f in schema.features:
        if f.kind is FeatureKind.CROSSED:
            continue  # reads other columns, added below
        col = table.column(f.name).combine_chunks()
        if f.kind is FeatureKind.NUMERIC:
            cols[f.name] = _as_float(col, f.name, source, row_offset)
        else:
            cols[f.name] = _text(col, f.name, source, row_offset)
    for name in schema.required_columns():  # the split column, the columns of crossed features
        if name not in cols and name in table.column_names:
            col = table.column(name).combine_chunks()
            if isinstance(schema.split, TimeSplit) and name == schema.split.column:
                cols[name] = _as_float(col, name, source, row_offset, what="split")
            elif name == getattr(schema.split, "column", None):
                cols[name] = col
            else:
                cols[name] = _text(col, name, source, row_offset)
    return pa.table(cols)


def _text(col: pa.Array, name: str, source: str, row_offset: int = 0) -> pa.Array:
    if pa.types.is_string(col.type):
        return col
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):  # bytes that are not UTF-8
            bad = np.array([v is not None and not _utf8(v) for v in col.to_pylist()])  # error path only
            raise DataError(
                f"{source}: text that is not valid utf-8 in column {name!r} on {_rows(bad, row_offset)}. "
                "Set `encoding:` in the dataset YAML to the file's encoding (e.g. latin-1 or cp1252), or re-save the file as UTF-8."
            ) from None
        raise DataError(
            f"{source}: column {name!r} has type {col.type}, which cannot be read as text values; "
            "store it as strings or numbers, or drop the feature"
        ) from None


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _as_float(col: pa.Array, name: str, source: str, row_offset: int = 0, what: str = "numeric") -> pa.Array:
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type) or pa.types.is_boolean(col.type):
        return col.cast(pa.float64())
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise DataError(f"{source}: column {name!r} ({what}) must hold numbers, but has type {col.type}")
    as_str = col.cast(pa.string())
    # Null markers ("", "NA", "null", ...) are missing values, as a CSV reader would read them.
    as_str = pc.if_else(pc.is_in(as_str, value_set=_NULL_TOKENS), pa.scalar(None, pa.string()), as_str)
    try:
        return as_str.cast(pa.float64())  # the fast path: every string is a number
    except pa.ArrowInvalid:
        pass
    # Some strings are not numbers (or carry spaces): find the rows that do not parse.
    vals = as_str.to_numpy(zero_copy_only=False)
    bad = np.zeros(len(vals), dtype=bool)
    out = np.full(len(vals), np.nan)
    for i, v in enumerate(vals):  # error path only: the fast path above handles clean columns
        if v is None:
            continue
        try:
            out[i] = float(v)
        except ValueError:
            bad[i] = True
    if bad.any():
        sample = [vals[i] for i in np.flatnonzero(bad)[:_SAMPLE]]
        if what == "label":
            raise DataError(f"{source}: column {name!r} (label) must be 0 or 1; {_rows(bad, row_offset)} hold non-numbers {sample}")
        if what == "split":
            raise DataError(f"{source}: split column {name!r} must be numeric (a day or timestamp); {_rows(bad, row_offset)} hold {sample}")
        raise DataError(
            f"{source}: column {name!r} is declared numeric but {_rows(bad, row_offset)} hold non-numbers {sample}. "
            "Declare it categorical or clean those values."
        )
    return pa.array(out, mask=np.isnan(out))


def load_dataset_table(schema: DatasetSchema, base: Path) -> pa.Table:
    """Read and validate every file a schema points at into one table (in memory)."""
    files = check_input_files(resolve_input_files(schema, base), schema)
    parts = []
    for f in files:
        if f.rows == 0:
            continue
        table = read_table(f.path, f.read_columns, encoding=schema.encoding)
        parts.append(validate_table(table, schema, str(f.path)))
    if not parts:
        raise DataError(f"{schema.resolve_path(base)}: no data rows in any file")
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


@dataclass(frozen=True)
class InputFile:
    """One data file, as far as its header or footer tells."""

    path: Path
    kind: str  # "csv" | "parquet"
    columns: tuple[str, ...]  # every column of the file
    read_columns: list[str]  # the columns the schema needs, present in this file
    types: dict[str, pa.DataType]  # Parquet: column -> Arrow type; CSV: empty (read as text)
    rows: int | None  # Parquet: from the footer; CSV: None (unknown until read), 0 if header only
    size: int


_GLOB = re.compile(r"[*?\[]")


def resolve_input_files(schema: DatasetSchema, base: Path) -> list[Path]:
    """The data files of a dataset: the file, the folder's data files or the glob's matches, sorted."""
    path = schema.resolve_path(Path(base))
    if _GLOB.search(schema.path):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"{path}: the glob matches no file; check `path` in the dataset YAML")
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")) and p.suffix.lower() in _SUFFIXES)
        if not files:
            raise DataError(f"{path}: the folder holds no .csv, .tsv or .parquet file")
    elif path.exists():
        files = [path]
    else:
        raise DataError(f"{path}: file not found")
    for f in files:
        _kind(f)
    return files


def _type_class(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "floating"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def _inspect_file(path: Path, encoding: str) -> InputFile:
    kind = _kind(path)
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); remove it or write the data")
    if kind == "parquet":
        try:
            meta = pq.ParquetFile(path)
            arrow_schema = meta.schema_arrow
            rows = meta.metadata.num_rows
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
            raise DataError(f"{path}: cannot be read as Parquet (truncated or corrupt?): {err}") from None
        types = {n: arrow_schema.field(n).type for n in arrow_schema.names}
        return InputFile(path, kind, tuple(arrow_schema.names), [], types, rows, size)
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        first = head.split(b"\n", 1)
        first[0].decode(encoding)
        header = _csv_header(path, encoding)
    except (UnicodeDecodeError, LookupError):
        raise DataError(
            f"{path}: the header line is not valid {encoding} text; set `encoding:` in the dataset YAML to the file's encoding"
        ) from None
    rows = 0 if len(first) == 1 or not first[1].strip() else None
    return InputFile(path, kind, tuple(header), [], {}, rows, size)


def check_input_files(files: list[Path], schema: DatasetSchema) -> list[InputFile]:
    """Check every file's columns (and Parquet types) against the schema and against each other.

    Reads headers and footers only. Raises DataError for a missing column, an empty or
    corrupt file, or shards whose column types disagree; warns about extra columns.
    """
    required = schema.required_columns()
    numeric_like = {schema.label, *schema.task_names, *(f.name for f in schema.features if f.kind is FeatureKind.NUMERIC)}
    if isinstance(schema.split, TimeSplit):
        numeric_like.add(schema.split.column)
    infos = [_inspect_file(f, schema.encoding) for f in files]
    first_types: dict[str, tuple[str, Path]] = {}
    out: list[InputFile] = []
    for info in infos:
        missing = [c for c in required if c not in info.columns]
        if missing:
            others = f" (other shards, e.g. {infos[0].path.name}, may have them)" if len(infos) > 1 else ""
            raise DataError(
                f"{info.path}: missing column(s) {missing}; the file has {list(info.columns)}{others}. "
                "Fix the dataset YAML or the file."
            )
        extra = [c for c in info.columns if c not in required]
        if extra:
            log.warning("%s: ignoring column(s) not named in the dataset YAML: %s", info.path, extra)
        for col, t in info.types.items():
            if col not in required:
                continue
            cls = _type_class(t)
            if cls == "null":  # an all-null column fits any type
                continue
            if col not in first_types:
                first_types[col] = (cls, info.path)
                continue
            seen, where = first_types[col]
            same = cls == seen or (col in numeric_like and {cls, seen} <= {"integer", "floating"})
            if not same:
                raise DataError(
                    f"shards disagree on column {col!r}: {where} stores it as {seen}, {info.path} as {cls}. "
                    "Values such as 7 and 7.0 would become different categories; write every shard with the same column types."
                )
        if info.rows == 0:
            if len(infos) == 1:
                raise DataError(f"{info.path}: no data rows (the file has a header only)")
            log.warning("%s: no data rows (header only); skipping this shard", info.path)
        out.append(InputFile(info.path, info.kind, info.columns, [c for c in required if c in info.columns], info.types, info.rows, info.size))
    if len(out) and all(f.rows == 0 for f in out):
        raise DataError(f"{out[0].path.parent}: no data rows in any of the {len(out)} files")
    return out


def iter_file_batches(info: InputFile, schema: DatasetSchema, batch_rows: int) -> Iterator[tuple[int, pa.Table]]:
    """Stream one file as (first data row, raw table of `info.read_columns`) pieces of about
    `batch_rows` rows; CSV columns are read as text and typed by `validate_table`."""
    path, first = info.path, 0
    try:
        if info.kind == "parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=info.read_columns):
                yield first, pa.Table.from_batches([batch])
                first += batch.num_rows
            return
        if info.rows == 0:
            return
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        per_row = max(len(head) / max(head.count(b"\n"), 1), 1.0)
        block = int(min(max(batch_rows * per_row, 1 << 16), 1 << 28))
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block, encoding=schema.encoding),
            parse_options=pacsv.ParseOptions(delimiter=_delimiter(path)),
            convert_options=pacsv.ConvertOptions(
                include_columns=info.read_columns,
                column_types={c: pa.string() for c in info.read_columns},
                strings_can_be_null=False,
            ),
        )
        for batch in reader:
            yield first, pa.Table.from_batches([batch])
            first += batch.num_rows
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError) as err:
        if info.kind == "csv":
            raise _csv_error(path, err, schema.encoding) from None
        raise DataError(f"{path}: cannot be read as Parquet after data row {first} (truncated or corrupt?): {err}") from None
