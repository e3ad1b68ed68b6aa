"""Read a user's click log (CSV, any delimited text, or Parquet) into Arrow tables and check it
against the schema: the one reading and validation path of every command.

Every problem is reported as a `DataError` naming the file, the column and a sample of the
offending row numbers (1-based data rows: a header line and comment lines are not counted),
never as a stack trace from deep inside pyarrow.

A dataset's files are `path:` (one file, a folder of shards or a glob) or several `sources:`,
each with its own domain and, optionally, its own `format:`. `resolve_input_files` lists the
files (each once, by resolved path; a `**` glob does not follow a symbolic link into a loop),
`check_input_files` reads only their headers / footers and checks them against the schema and
against each other, and `iter_file_batches` streams one file in record batches; every batch,
whether `crossctr prepare` streams it or `crossctr train` collects the file in memory, goes
through `validate_table`.

Policies:
    extra columns     ignored; one warning lists them per file
    a column named twice (CSV header or Parquet schema) that the schema needs: an error
    a shard with a header but no rows, among other shards: skipped with a warning
    shards whose column types disagree (e.g. brand int64 in one, string in another): an error,
                      because 7 and "7.0" would silently become different categories; only
                      integer vs floating is accepted, for numeric, label and split columns
    an empty text cell in a categorical, hashed, multi-valued or crossed column: missing, as
                      JSON null is in the service
    labels            0/1 (also true/false), or a rule (`label: {column, positive: ">= 4"}`)
"""

from __future__ import annotations

import codecs
import csv
import errno
import fnmatch
import io
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from crossctr.schema import DatasetSchema, FeatureKind, FormatSpec, LabelRule, TimeSplit

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "DataError",
    "read_table",
    "validate_table",
    "load_dataset_table",
    "InputFile",
    "SourceFile",
    "DOMAIN_SEPARATOR",
    "resolve_input_files",
    "check_input_files",
    "iter_file_batches",
    "check_file",
    "open_text_batches",
    "parse_numbers",
]

log = logging.getLogger(__name__)

_SAMPLE = 5  # offending rows quoted in an error message
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".txt": "csv"}
# Text that means "no value" in a numeric or label column: Arrow's CSV null markers and "None".
_NULL_TOKENS = pa.array(
    [
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "n/a",
        "nan",
        "null",
        "None",
    ]
)
# Boolean words a label column may hold (Parquet booleans and CSV "true"/"false" alike).
_TRUE, _FALSE = pa.array(["true", "True", "TRUE"]), pa.array(["false", "False", "FALSE"])
# A per-domain feature's value v of domain d is read as d + DOMAIN_SEPARATOR + v.
DOMAIN_SEPARATOR = "\x1f"
# What a file's first bytes say it is, whatever its name.
_MAGIC = (
    (b"PAR1", "a Parquet file"),
    (b"\x1f\x8b", "gzip-compressed"),
    (b"BZh", "bzip2-compressed"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
    (b"PK\x03\x04", "a zip archive"),
)
_MAX_BLOCK = 1 << 30  # the CSV read block grows up to this to hold one very long row


class DataError(ValueError):
    """Input data does not match its schema; the message names file, column and rows."""


def _rows(mask: np.ndarray, offset: int = 0) -> str:
    idx = np.flatnonzero(mask) + offset
    shown = ", ".join(str(i + 1) for i in idx[:_SAMPLE])
    more = f" and {len(idx) - _SAMPLE} more" if len(idx) > _SAMPLE else ""
    return f"rows {shown}{more}"


_DEFAULT_FORMAT = FormatSpec()


def _kind(path: Path, fmt: FormatSpec | None = None) -> str:
    if fmt is not None and fmt.kind is not None:
        return fmt.kind
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unknown file type {path.suffix.lower() or '(no suffix)'!r}; "
            "use .csv, .tsv or .parquet, or say what "
            "it is in the dataset YAML, e.g. `format: {kind: csv, delimiter: \"\\t\"}` for tab-separated text"
        )
    return kind


def _delimiter(path: Path, fmt: FormatSpec | None = None) -> str:
    if fmt is not None and fmt.delimiter is not None:
        return fmt.delimiter
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _py_encoding(encoding: str) -> str:
    """The codec Python decodes with: utf-8 skips a byte-order mark, as Arrow's reader does."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _magic(path: Path) -> str | None:
    """What the first bytes of a file say it is (Parquet, a compressed stream, a zip), or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    return next((what for sig, what in _MAGIC if head.startswith(sig)), None)


def _check_magic(path: Path, kind: str) -> None:
    """A file whose bytes contradict its kind gets an error saying what it really is."""
    what = _magic(path)
    if kind == "csv" and what is not None:
        fix = (
            "rename it to .parquet or set `format: {kind: parquet}` in the dataset YAML"
            if what == "a Parquet file"
            else "decompress it first (e.g. `gunzip`, `unzstd`, `unzip`) and point the dataset YAML at the text file"
        )
        raise DataError(f"{path}: is {what}, not delimited text as its name or `format:` says; {fix}")
    if kind == "parquet" and what not in (None, "a Parquet file"):
        raise DataError(f"{path}: is {what}, not a Parquet file; decompress it first")
    if kind == "parquet" and what is None and path.stat().st_size >= 4:
        with open(path, "rb") as fh:
            head = fh.read(256)
        looks_text = all(b >= 9 for b in head) and b"\n" in head
        hint = "; it looks like delimited text: name it .csv or set `format: {kind: csv}`" if looks_text else ""
        raise DataError(f"{path}: is not a Parquet file (it does not start with the Parquet magic bytes PAR1){hint}")


class _LineFilter(io.RawIOBase):
    """A binary stream without the lines that start with `comment` (bytes in the file's encoding)."""

    def __init__(self, raw: IO[bytes], comment: bytes) -> None:
        self.raw, self.comment, self.buf, self.carry, self.done, self.start = raw, comment, b"", b"", False, True

    def readable(self) -> bool:
        return True

    def readinto(self, b: WriteableBuffer) -> int:
        out = memoryview(b).cast("B")  # the caller's buffer, byte by byte
        while not self.buf and not self.done:
            chunk = self.raw.read(1 << 20)
            if not chunk:
                self.done, lines = True, [self.carry] if self.carry else []
                self.carry = b""
            else:
                lines = (self.carry + chunk).split(b"\n")
                self.carry = lines.pop()  # a partial last line waits for the next chunk
                lines = [ln + b"\n" for ln in lines]
            if self.start and lines and lines[0].startswith(b"\xef\xbb\xbf"):  # a byte-order mark before a comment
                lines[0] = lines[0][3:] if lines[0][3:].startswith(self.comment) else lines[0]
            self.start = self.start and not lines
            self.buf = b"".join(ln for ln in lines if not ln.startswith(self.comment))
        n = min(len(out), len(self.buf))
        out[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def _csv_source(path: Path, fmt: FormatSpec) -> str | IO[bytes]:
    """What Arrow's CSV reader opens: the path itself (a native file) unless comment lines must be
    dropped, which takes a Python stream (close it after the reader is gone)."""
    return str(path) if fmt.comment is None else _open_bytes(path, fmt)


def _close(source: str | IO[bytes]) -> None:
    """Close a CSV source after its reader is dropped: Arrow reads ahead in a background thread,
    which must not find a Python stream closed under it (or still open at interpreter exit)."""
    if not isinstance(source, str):
        source.close()


def _open_bytes(path: Path, fmt: FormatSpec) -> IO[bytes]:
    """The file's bytes, comment lines dropped when `format.comment` is set."""
    fh = open(path, "rb")
    if fmt.comment is None:
        return fh
    comment = fmt.comment.encode(fmt.encoding or "utf-8")
    return io.BufferedReader(_LineFilter(fh, comment), buffer_size=1 << 20)


def _text_lines(path: Path, fmt: FormatSpec, encoding: str) -> Iterator[list[str]]:
    """Parsed fields of every line (header included), comment lines dropped; error path only."""
    with (
        _open_bytes(path, fmt) as raw,
        io.TextIOWrapper(raw, encoding=_py_encoding(encoding), errors="replace", newline="") as fh,
    ):
        quoting = csv.QUOTE_NONE if fmt.quote is None else csv.QUOTE_MINIMAL
        yield from csv.reader(fh, delimiter=_delimiter(path, fmt), quotechar=fmt.quote or '"', quoting=quoting)


def _csv_rows_with(
    path: Path, fmt: FormatSpec, encoding: str, bad: Callable[[list[str], list[str]], bool]
) -> list[int]:
    """1-based data rows of a CSV file for which bad(fields, header) holds (error path only)."""
    found: list[int] = []
    lines = (fields for fields in _text_lines(path, fmt, encoding) if fields)  # Arrow skips empty lines too
    header = list(fmt.columns) if fmt.columns is not None else []
    if fmt.header:
        first = next(lines, [])
        header = header or first
    for i, fields in enumerate(lines, start=1):
        if bad(fields, header):
            found.append(i)
            if len(found) > _SAMPLE:
                break
    return found


def _undecodable_rows(path: Path, fmt: FormatSpec, encoding: str) -> list[int]:
    """1-based data rows (lines after the header, comment lines not counted) that are not valid `encoding` text."""
    found: list[int] = []
    comment = fmt.comment.encode("latin-1", "replace") if fmt.comment else None
    row = 0 if fmt.header else 1  # line 0 is the header
    with open(path, "rb") as fh:
        for line in fh:
            if comment is not None and line.startswith(comment):
                continue
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                found.append(row)
                if len(found) > _SAMPLE:
                    break
            row += 1
    return found


def _fmt_rows(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_SAMPLE])
    return f"rows {shown}{' and more' if len(rows) > _SAMPLE else ''}"


def _csv_error(path: Path, err: Exception, fmt: FormatSpec, encoding: str, names: list[str] | None = None) -> DataError:
    """Turn pyarrow's CSV error into one that names the file, the column and the rows."""
    msg = str(err)
    if "Empty CSV file" in msg:
        return DataError(f"{path}: the file is empty (not even a header line); remove it or write the data")
    ragged = re.search(r"Expected (\d+) columns, got (\d+)", msg)
    if ragged:
        rows = _csv_rows_with(path, fmt, encoding, lambda fields, header: len(fields) != len(header))
        what = "the header" if fmt.header and fmt.columns is None else "format.columns"
        return DataError(
            f"{path}: {_fmt_rows(rows) if rows else 'some rows'} do not have as many fields as {what} "
            f"({ragged.group(1)} columns; one row has {ragged.group(2)}). Fix the rows (a quoting problem, a "
            "missing separator or the wrong `format.delimiter`) or drop them."
        )
    if "invalid UTF8" in msg or "UnicodeDecodeError" in msg or "decode" in msg.lower():
        col = re.search(r"CSV column #(\d+)", msg)
        where = ""
        if col:
            header = names if names is not None else _csv_header(path, fmt, "latin-1")
            k = int(col.group(1))
            where = f" in column {header[k]!r}" if k < len(header) else ""
        rows = _undecodable_rows(path, fmt, encoding)
        return DataError(
            f"{path}: text that is not valid {encoding}{where} on {_fmt_rows(rows) if rows else 'some rows'}. "
            "Set `encoding:` in the dataset YAML to the file's encoding "
            "(e.g. latin-1 or cp1252), or re-save the file as UTF-8."
        )
    if "straddling" in msg:
        return DataError(
            f"{path}: a row longer than {_MAX_BLOCK >> 20} MiB (a quote opened and never closed?); fix the quoting or "
            "set `format: {quote: null}` when the values contain unpaired quote characters"
        )
    col = re.search(r"CSV column #(\d+)", msg)
    if col and names is not None and int(col.group(1)) < len(names):
        msg = msg.replace(col.group(0), f"column {names[int(col.group(1))]!r}")
    return DataError(f"{path}: cannot be read as CSV: {msg}")


def _csv_header(path: Path, fmt: FormatSpec, encoding: str) -> list[str]:
    """The column names: format.columns, or the first line that is not a comment."""
    if fmt.columns is not None:
        return list(fmt.columns)
    return next((fields for fields in _text_lines(path, fmt, encoding) if fields), [])


def _duplicates(names: list[str] | tuple[str, ...]) -> dict[str, list[int]]:
    """Column name -> 1-based positions, for names that occur more than once."""
    pos: dict[str, list[int]] = {}
    for i, n in enumerate(names, start=1):
        pos.setdefault(n, []).append(i)
    return {n: p for n, p in pos.items() if len(p) > 1}


def _refuse_duplicates(path: Path, names: list[str] | tuple[str, ...], needed: list[str] | None) -> None:
    dupes = {n: p for n, p in _duplicates(names).items() if needed is None or n in needed}
    if dupes:
        where = "; ".join(f"{n!r} at positions {p}" for n, p in dupes.items())
        raise DataError(
            f"{path}: column name(s) used more than once: {where}. Rename the columns so that each name is unique."
        )


def _csv_read_options(fmt: FormatSpec, encoding: str, block: int | None = None) -> pacsv.ReadOptions:
    kw: dict = {"encoding": encoding}
    if block is not None:
        kw["block_size"] = block
    if fmt.columns is not None:
        kw["column_names"] = list(fmt.columns)
        kw["skip_rows"] = 1 if fmt.header else 0
    return pacsv.ReadOptions(**kw)


def _csv_parse_options(path: Path, fmt: FormatSpec) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(delimiter=_delimiter(path, fmt), quote_char=fmt.quote if fmt.quote is not None else False)


def _not_found(path: Path) -> DataError:
    """`file not found`, or what is really wrong with a path that does not resolve (a link loop)."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return DataError(
                f"{path}: symbolic link loop (the link points, directly or "
                "through others, back to itself); fix or remove the link"
            )
        if os.path.islink(path):
            return DataError(
                f"{path}: a symbolic link to {os.readlink(path)!r}, which does not exist; fix or remove the link"
            )
        if err.errno == errno.EACCES:
            return DataError(f"{path}: permission denied; make the file readable")
    return DataError(f"{path}: file not found")


def check_file(path: Path, kind: str) -> None:
    """Raise a DataError when `path` is not a readable file of `kind` ("csv" or "parquet"): not
    found, a link that loops or points nowhere, or bytes of another kind (Parquet, gzip, ...)."""
    if not path.is_file():
        raise _not_found(path)
    _check_magic(path, kind)


def open_text_batches(
    path: Path, fmt: FormatSpec, column_types: dict[str, pa.DataType], block_size: int
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Stream a delimited text file in `fmt`'s layout (delimiter, header or columns, comment,
    quote, encoding): its Arrow schema and its record batches. `column_types` fixes the types of
    those columns (the others are inferred from the first block); empty text stays "" (no null
    markers). A block that does not parse raises a DataError naming the file and the column."""
    encoding = fmt.encoding or "utf-8"
    try:
        names = _csv_header(path, fmt, encoding)
        reader = pacsv.open_csv(
            _csv_source(path, fmt),
            read_options=_csv_read_options(fmt, encoding, block_size),
            parse_options=_csv_parse_options(path, fmt),
            convert_options=pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError) as err:
        raise _csv_error(path, err, fmt, encoding) from None

    def batches() -> Iterator[pa.RecordBatch]:
        while True:
            try:
                batch = next(reader, None)
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError) as err:
                raise _csv_error(path, err, fmt, encoding, names) from None
            if batch is None:
                return
            yield batch

    return reader.schema, batches()


def parse_numbers(col: pa.Array, name: str, source: str, row_offset: int = 0) -> pa.Array:
    """A column of numbers or number text as float64 (null markers are missing), exactly as
    `validate_table` reads a numeric feature; text that is not a number is a DataError naming
    the column and the rows."""
    return _as_float(col, name, source, row_offset)


def read_table(
    path: str | Path, columns: list[str] | None = None, *, encoding: str = "utf-8", fmt: FormatSpec | None = None
) -> pa.Table:
    """Read a CSV or Parquet file whole (types inferred); `columns`, if given, must all be present."""
    path = Path(path)
    if not path.exists():
        raise _not_found(path)
    fmt = fmt or _DEFAULT_FORMAT
    encoding = fmt.encoding or encoding
    kind = _kind(path, fmt)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); remove it or write the data")
    _check_magic(path, kind)
    try:
        if kind == "parquet":
            names = pq.ParquetFile(path).schema_arrow.names
            _refuse_duplicates(path, names, columns)
            table = pq.read_table(path)
        else:
            names = _csv_header(path, fmt, encoding)
            _refuse_duplicates(path, names, columns)
            src = _csv_source(path, fmt)
            try:
                table = pacsv.read_csv(
                    src, parse_options=_csv_parse_options(path, fmt), read_options=_csv_read_options(fmt, encoding)
                )
            finally:
                _close(src)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError) as err:
        if kind == "csv":
            raise _csv_error(path, err, fmt, encoding) from None
        raise DataError(f"{path}: cannot be read as {kind} (truncated or corrupt?): {err}") from None
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


def validate_table(
    table: pa.Table, schema: DatasetSchema, source: str, row_offset: int = 0, *, scoring: bool = False
) -> pa.Table:
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
    rule = schema.label_rule
    if rule is not None:
        cols[schema.label] = _apply_rule(label, rule, schema.label, source, row_offset)
    else:
        lab = _as_float(label, schema.label, source, row_offset, what="label").to_numpy(zero_copy_only=False)
        if np.isnan(lab).any():
            raise DataError(
                f"{source}: column {schema.label!r} (label) is missing on {_rows(np.isnan(lab), row_offset)}"
            )
        bad = (lab != 0) & (lab != 1)
        if bad.any():
            vals = sorted({float(v) for v in lab[bad][:_SAMPLE]})
            raise DataError(
                f"{source}: column {schema.label!r} (label) must be 0 or 1; {_rows(bad, row_offset)} hold {vals}. "
                "To make a 0/1 label of another scale, give a rule: "
                f'label: {{column: {schema.label}, positive: ">= 4"}}'
            )
        cols[schema.label] = pa.array(lab.astype(np.int8))
    for task in [] if scoring else schema.task_names:  # 0/1, or missing: no label for that row
        t = _as_float(table.column(task).combine_chunks(), task, source, row_offset, what="label").to_numpy(
            zero_copy_only=False
        )
        bad = ~np.isnan(t) & (t != 0) & (t != 1)
        if bad.any():
            vals = sorted({float(v) for v in t[bad][:_SAMPLE]})
            raise DataError(
                f"{source}: column {task!r} (task label) must be 0, 1 or missing; {_rows(bad, row_offset)} hold {vals}"
            )
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
            if f.per_domain:  # "book" item 17 and "music" item 17 become two values
                cols[f.name] = pc.binary_join_element_wise(dom, cols[f.name], DOMAIN_SEPARATOR)
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


def _apply_rule(col: pa.Array, rule: LabelRule, name: str, source: str, row_offset: int) -> pa.Array:
    """0/1 (int8) of a label rule over a column: numbers compared as numbers, else as text."""
    target = (
        _as_float(col, name, source, row_offset, what="label") if rule.numeric else _text(col, name, source, row_offset)
    )
    miss = target.is_null().to_numpy(zero_copy_only=False)
    if rule.numeric:
        miss |= np.isnan(target.to_numpy(zero_copy_only=False))
    if miss.any():
        raise DataError(f"{source}: column {name!r} (label) is missing on {_rows(miss, row_offset)}")
    if rule.op == "in":
        pos = pc.is_in(target, value_set=pa.array(rule.values, target.type))
    else:
        ops = {
            "==": pc.equal,
            "!=": pc.not_equal,
            ">=": pc.greater_equal,
            "<=": pc.less_equal,
            ">": pc.greater,
            "<": pc.less,
        }
        pos = ops[rule.op](target, pa.scalar(rule.values[0], target.type))
    return pos.cast(pa.int8())


def _text(col: pa.Array, name: str, source: str, row_offset: int = 0) -> pa.Array:
    """The column as strings; an empty string is missing (null), as JSON null is in the service."""
    col = _as_text(col, name, source, row_offset)
    if len(col) and col.null_count < len(col) and pc.any(pc.equal(col, "")).as_py():
        col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
    return col


def _as_text(col: pa.Array, name: str, source: str, row_offset: int = 0) -> pa.Array:
    if pa.types.is_string(col.type):
        return col
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):  # bytes that are not UTF-8
            bad = np.array([v is not None and not _utf8(v) for v in col.to_pylist()])  # error path only
            raise DataError(
                f"{source}: text that is not valid utf-8 in column {name!r} on {_rows(bad, row_offset)}. "
                "Set `encoding:` in the dataset YAML to the file's encoding "
                "(e.g. latin-1 or cp1252), or re-save the file as UTF-8."
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
    if (
        pa.types.is_floating(col.type)
        or pa.types.is_integer(col.type)
        or pa.types.is_null(col.type)
        or pa.types.is_boolean(col.type)
    ):
        return col.cast(pa.float64())
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise DataError(f"{source}: column {name!r} ({what}) must hold numbers, but has type {col.type}")
    as_str = col.cast(pa.string())
    # Null markers ("", "NA", "null", ...) are missing values, as a CSV reader would read them.
    as_str = pc.if_else(pc.is_in(as_str, value_set=_NULL_TOKENS), pa.scalar(None, pa.string()), as_str)
    if what == "label":  # true / false, as a Parquet boolean column holds them
        as_str = pc.if_else(
            pc.is_in(as_str, value_set=_TRUE),
            pa.scalar("1"),
            pc.if_else(pc.is_in(as_str, value_set=_FALSE), pa.scalar("0"), as_str),
        )
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
            raise DataError(
                f"{source}: column {name!r} (label) must be 0 or 1; "
                f"{_rows(bad, row_offset)} hold non-numbers {sample}. "
                f'To make a 0/1 label of text, give a rule: label: {{column: {name}, positive: "== {sample[0]}"}}'
            )
        if what == "split":
            raise DataError(
                f"{source}: split column {name!r} must be numeric (a day "
                f"or timestamp); {_rows(bad, row_offset)} hold {sample}"
            )
        raise DataError(
            f"{source}: column {name!r} is declared numeric but {_rows(bad, row_offset)} hold non-numbers {sample}. "
            "Declare it categorical or clean those values."
        )
    return pa.array(out, mask=np.isnan(out))


def load_dataset_table(schema: DatasetSchema, base: Path) -> pa.Table:
    """Read and validate every file a schema points at into one table (in memory), through the
    same reader and `validate_table` as the streaming `crossctr prepare`."""
    files = check_input_files(resolve_input_files(schema, base), schema)
    parts = [
        validate_table(raw, schema, str(f.path), row_offset=first)
        for f in files
        for first, raw in iter_file_batches(f, schema, 1 << 20)
        if raw.num_rows
    ]
    if not parts:
        raise DataError(f"{schema.resolve_path(base)}: no data rows in any file")
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


@dataclass(frozen=True)
class SourceFile:
    """One data file of a dataset: where it is, the domain of all its rows (or None: the file
    has a domain column) and how it is laid out."""

    path: Path
    domain: str | None = None
    format: FormatSpec = _DEFAULT_FORMAT

    def __fspath__(self) -> str:  # usable wherever a path is (os.stat, open, relpath)
        return str(self.path)


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
    domain: str | None = None  # every row's domain (a source with `domain:`); None: a column says
    format: FormatSpec = _DEFAULT_FORMAT


_GLOB = re.compile(r"[*?\[]")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob relative to its root: `*` `?` `[..]` within one path segment, `**` any
    number of segments (none included)."""
    out = []
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if part == "**":
            out.append("(?:[^/]+/)*" if i < len(parts) - 1 else "(?:[^/]+/)*[^/]+")  # a last ** matches files too
            continue
        out.append(
            fnmatch.translate(part).replace("(?s:", "(?:").removesuffix("\\Z").replace(".*", "[^/]*")
            + ("/" if i < pattern.count("/") else "")
        )
    return re.compile("".join(out) + "\\Z")


def _walk_glob(root: Path, pattern: str, where: str) -> list[Path]:
    """Files under `root` whose relative path matches `pattern`, walking every folder once by its
    resolved path: a symbolic link back to a folder already walked (a loop) is reported, not followed."""
    regex = _glob_regex(pattern)
    max_depth = None if "**" in pattern.split("/") else pattern.count("/")  # without **, no deeper than the pattern
    seen_dirs: set[tuple[int, int]] = set()
    found: list[Path] = []
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            st = folder.stat()
        except OSError as err:
            if err.errno == errno.ELOOP:
                log.warning("%s: %s is a symbolic link loop; not followed", where, folder)
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            log.warning(
                "%s: %s leads back to folder %s already read (a symbolic "
                "link loop); not followed, each file is read once",
                where,
                folder,
                folder.resolve(),
            )
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            rel = entry.relative_to(root).as_posix()
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.name.startswith(".") and (max_depth is None or depth < max_depth):
                    stack.append((entry, depth + 1))
            elif regex.match(rel) and not entry.name.startswith("."):
                if entry.is_file():
                    found.append(entry)
                elif entry.is_symlink():
                    raise _not_found(entry)
    return sorted(found)


def _source_files(spec_path: str, base: Path, fmt: FormatSpec) -> list[Path]:
    p = Path(spec_path)
    path = p if p.is_absolute() else base / p
    if _GLOB.search(spec_path):
        parts = path.parts
        k = next(i for i, part in enumerate(parts) if _GLOB.search(part))
        root, rest = Path(*parts[:k]), "/".join(parts[k:])
        files = _walk_glob(root, rest, spec_path) if root.is_dir() else []
        if not files:
            raise DataError(f"{path}: the glob matches no file; check `path` in the dataset YAML")
        return files
    if path.is_dir():
        files = sorted(
            f
            for f in path.iterdir()
            if f.is_file()
            and not f.name.startswith((".", "_"))
            and (fmt.kind is not None or f.suffix.lower() in _SUFFIXES)
        )
        if not files:
            raise DataError(f"{path}: the folder holds no .csv, .tsv or .parquet file")
        return files
    if path.exists():
        return [path]
    raise _not_found(path)


def resolve_input_files(schema: DatasetSchema, base: Path) -> list[SourceFile]:
    """The data files of a dataset, source by source (a file, the folder's data files or the
    glob's matches, sorted), each once: a file reached twice through links is read once, and a
    file two sources with different domains name is an error."""
    out: list[SourceFile] = []
    owner: dict[str, SourceFile] = {}
    for spec in schema.source_specs:
        fmt = spec.format or _DEFAULT_FORMAT
        for path in _source_files(spec.path, Path(base), fmt):
            _kind(path, fmt)
            key = os.path.realpath(path)
            if key in owner:
                first = owner[key]
                if first.domain != spec.domain:
                    raise DataError(
                        f"{path}: named by two sources, with domains {first.domain!r} "
                        f"and {spec.domain!r}; give each file one source"
                    )
                log.warning("%s: the same file as %s (by resolved path); read once", path, first.path)
                continue
            owner[key] = SourceFile(path, spec.domain, fmt)
            out.append(owner[key])
    return out


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


def _as_source(f: SourceFile | Path, schema: DatasetSchema) -> SourceFile:
    if isinstance(f, SourceFile):
        return f
    return SourceFile(Path(f), None, schema.source_specs[0].format or _DEFAULT_FORMAT)


def _inspect_file(src: SourceFile) -> InputFile:
    path, fmt = src.path, src.format
    if not path.exists():
        raise _not_found(path)
    kind = _kind(path, fmt)
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); remove it or write the data")
    _check_magic(path, kind)
    if kind == "parquet":
        try:
            meta = pq.ParquetFile(path)
            arrow_schema = meta.schema_arrow
            rows = meta.metadata.num_rows
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
            raise DataError(f"{path}: cannot be read as Parquet (truncated or corrupt?): {err}") from None
        types = {field.name: field.type for field in arrow_schema}  # a repeated name is refused by check_input_files
        return InputFile(path, kind, tuple(arrow_schema.names), [], types, rows, size, src.domain, fmt)
    encoding = fmt.encoding or "utf-8"
    lines = 0
    try:
        with _open_bytes(path, fmt) as fh:
            head = fh.read(1 << 16)
        decodable = head[: head.rfind(b"\n") + 1] if len(head) == 1 << 16 else head
        decodable.split(b"\n", 1)[0].decode(_py_encoding(encoding))
        header = _csv_header(path, fmt, encoding)
        lines = sum(1 for ln in head.splitlines() if ln.strip(b"\xef\xbb\xbf \t\r"))
    except (UnicodeDecodeError, LookupError):
        what = "header line" if fmt.header else "first line"
        raise DataError(
            f"{path}: the {what} is not valid {encoding} text; set "
            "`encoding:` in the dataset YAML to the file's encoding"
        ) from None
    rows = 0 if lines <= (1 if fmt.header else 0) else None
    return InputFile(path, kind, tuple(header), [], {}, rows, size, src.domain, fmt)


def check_input_files(files: list[SourceFile] | list[Path], schema: DatasetSchema) -> list[InputFile]:
    """Check every file's columns (and Parquet types) against the schema and against each other.

    Reads headers and footers only. Raises DataError for a missing or repeated column, an
    empty or corrupt file, or shards whose column types disagree; warns about extra columns.
    """
    required = schema.required_columns()
    numeric_like = {
        schema.label,
        *schema.task_names,
        *(f.name for f in schema.features if f.kind is FeatureKind.NUMERIC),
    }
    if isinstance(schema.split, TimeSplit):
        numeric_like.add(schema.split.column)
    infos = [_inspect_file(_as_source(f, schema)) for f in files]
    first_types: dict[str, tuple[str, Path]] = {}
    out: list[InputFile] = []
    for info in infos:
        needed = [c for c in required if not (info.domain is not None and c == schema.domain.column)]
        if info.domain is not None and schema.domain.column in info.columns:
            raise DataError(
                f"{info.path}: has a column {schema.domain.column!r}, but "
                f"its source sets domain {info.domain!r} for every row; "
                "drop the source's `domain:` to use the column, or rename the column (domain.column)"
            )
        _refuse_duplicates(info.path, info.columns, needed)
        missing = [c for c in needed if c not in info.columns]
        if missing:
            others = f" (other shards, e.g. {infos[0].path.name}, may have them)" if len(infos) > 1 else ""
            raise DataError(
                f"{info.path}: missing column(s) {missing}; the file has {list(info.columns)}{others}. "
                "Fix the dataset YAML or the file."
            )
        extra = list(dict.fromkeys(c for c in info.columns if c not in required))
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
                    "Values such as 7 and 7.0 would become different "
                    "categories; write every shard with the same column types."
                )
        if info.rows == 0:
            if len(infos) == 1:
                raise DataError(
                    f"{info.path}: no data rows "
                    f"({'the file has a header only' if info.format.header else 'only comment or empty lines'})"
                )
            log.warning("%s: no data rows (header only); skipping this shard", info.path)
        out.append(
            InputFile(
                info.path,
                info.kind,
                info.columns,
                [c for c in needed if c in info.columns],
                info.types,
                info.rows,
                info.size,
                info.domain,
                info.format,
            )
        )
    if len(out) and all(f.rows == 0 for f in out):
        raise DataError(f"{out[0].path.parent}: no data rows in any of the {len(out)} files")
    return out


def iter_file_batches(info: InputFile, schema: DatasetSchema, batch_rows: int) -> Iterator[tuple[int, pa.Table]]:
    """Stream one file as (first data row, raw table of `info.read_columns`) pieces of about
    `batch_rows` rows; CSV columns are read as text and typed by `validate_table`. A source's
    domain is added as the domain column."""
    for first, table in _file_batches(info, schema, batch_rows):
        if info.domain is not None:
            table = table.append_column(schema.domain.column, pa.array([info.domain] * table.num_rows, pa.string()))
        yield first, table


def _file_batches(info: InputFile, schema: DatasetSchema, batch_rows: int) -> Iterator[tuple[int, pa.Table]]:
    path, first, fmt = info.path, 0, info.format
    encoding = fmt.encoding or schema.encoding
    if info.kind == "parquet":
        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=info.read_columns):
                yield first, pa.Table.from_batches([batch])
                first += batch.num_rows
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
            raise DataError(
                f"{path}: cannot be read as Parquet after data row {first} (truncated or corrupt?): {err}"
            ) from None
        return
    if info.rows == 0:
        return
    with _open_bytes(path, fmt) as fh:
        head = fh.read(1 << 16)
    per_row = max(len(head) / max(head.count(b"\n"), 1), 1.0)
    block = int(min(max(batch_rows * per_row, 1 << 16), 1 << 28))
    while True:  # a row longer than the block: read again with a larger block, past the rows done
        skip, done = first, 0
        src, reader = _csv_source(path, fmt), None
        try:
            reader = pacsv.open_csv(
                src,
                read_options=_csv_read_options(fmt, encoding, block),
                parse_options=_csv_parse_options(path, fmt),
                convert_options=pacsv.ConvertOptions(
                    include_columns=info.read_columns,
                    column_types={c: pa.string() for c in info.read_columns},
                    strings_can_be_null=False,
                ),
            )
            for batch in reader:
                n = batch.num_rows
                if done + n <= skip:
                    done += n
                    continue
                if done < skip:
                    batch, done = batch.slice(skip - done), skip
                yield first, pa.Table.from_batches([batch])
                first += batch.num_rows
                done += batch.num_rows
            return
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError) as err:
            error = err
        finally:
            reader = None  # the reader (and its read-ahead) goes before its Python stream closes
            _close(src)
        if "straddling" in str(error) and block < _MAX_BLOCK:
            block = min(block * 4, _MAX_BLOCK)
            continue
        raise _csv_error(path, error, fmt, encoding, list(info.columns)) from None
