"""Read a user's click log (CSV or Parquet) into an Arrow table and check it against the schema.

Every problem is reported as a `DataError` naming the file, the column and a sample of the
offending row numbers (1-based data rows, header excluded), never as a stack trace from
deep inside pyarrow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from crossctr.schema import DatasetSchema, FeatureKind

__all__ = ["DataError", "read_table", "validate_table", "load_dataset_table"]

_SAMPLE = 5  # offending rows quoted in an error message


class DataError(ValueError):
    """Input data does not match its schema; the message names file, column and rows."""


def _rows(mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i + 1) for i in idx[:_SAMPLE])
    more = f" and {len(idx) - _SAMPLE} more" if len(idx) > _SAMPLE else ""
    return f"rows {shown}{more}"


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read a CSV or Parquet file; `columns`, if given, must all be present."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            parse = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            table = pacsv.read_csv(path, parse_options=parse)
        else:
            raise DataError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv or .parquet")
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {err}") from None
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


def validate_table(table: pa.Table, schema: DatasetSchema, source: str) -> pa.Table:
    """Check label, domain and numeric columns; return the table with normalised types.

    Labels become int8 0/1, the domain column a string, numeric features float64 and
    categorical features strings (so '7' in a CSV and 7 in a Parquet file are one category).
    """
    cols: dict[str, pa.Array] = {}
    label = table.column(schema.label).combine_chunks()
    if label.null_count:
        raise DataError(f"{source}: column {schema.label!r} (label) is missing on {_rows(label.is_null().to_numpy(zero_copy_only=False))}")
    try:
        lab = label.cast(pa.float64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"{source}: column {schema.label!r} (label) must be 0/1 numbers, got type {label.type}") from None
    bad = (lab != 0) & (lab != 1)
    if bad.any():
        vals = sorted({float(v) for v in lab[bad][:_SAMPLE]})
        raise DataError(f"{source}: column {schema.label!r} (label) must be 0 or 1; {_rows(bad)} hold {vals}")
    cols[schema.label] = pa.array(lab.astype(np.int8))

    dom = table.column(schema.domain.column).combine_chunks().cast(pa.string())
    known = pc.is_in(dom, value_set=pa.array(schema.domain.values)).to_numpy(zero_copy_only=False)
    known &= ~dom.is_null().to_numpy(zero_copy_only=False)
    if not known.all():
        seen = sorted({str(v) for v in np.asarray(dom.to_pylist(), dtype=object)[~known][:50]})
        raise DataError(
            f"{source}: column {schema.domain.column!r} (domain) holds values not declared in "
            f"domain.values {list(schema.domain.values)}: {seen[:_SAMPLE]} on {_rows(~known)}. "
            "Add them to domain.values or drop those rows."
        )
    cols[schema.domain.column] = dom

    for f in schema.features:
        col = table.column(f.name).combine_chunks()
        if f.kind is FeatureKind.NUMERIC:
            cols[f.name] = _as_float(col, f.name, source)
        else:
            cols[f.name] = col if pa.types.is_string(col.type) else col.cast(pa.string())
    for name in schema.required_columns():  # e.g. the split column, when present
        if name not in cols and name in table.column_names:
            cols[name] = table.column(name).combine_chunks()
    return pa.table(cols)


def _as_float(col: pa.Array, name: str, source: str) -> pa.Array:
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type):
        return col.cast(pa.float64())
    # Strings that should be numbers: find the rows that do not parse.
    as_str = col.cast(pa.string())
    vals = as_str.to_numpy(zero_copy_only=False)
    bad = np.zeros(len(vals), dtype=bool)
    out = np.full(len(vals), np.nan)
    for i, v in enumerate(vals):  # error path only: the fast path above handles typed columns
        if v is None or v == "":
            continue
        try:
            out[i] = float(v)
        except ValueError:
            bad[i] = True
    if bad.any():
        sample = [vals[i] for i in np.flatnonzero(bad)[:_SAMPLE]]
        raise DataError(
            f"{source}: column {name!r} is declared numeric but {_rows(bad)} hold non-numbers {sample}. "
            "Declare it categorical or clean those values."
        )
    return pa.array(out, mask=np.isnan(out))


def load_dataset_table(schema: DatasetSchema, base: Path) -> pa.Table:
    """Read and validate the file a schema points at."""
    path = schema.resolve_path(base)
    table = read_table(path, schema.required_columns())
    return validate_table(table, schema, str(path))
