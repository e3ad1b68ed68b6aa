"""Bad input gets an error naming the file, the column and the offending rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from crossctr.data.dataset import prepare
from crossctr.data.io import DataError, load_dataset_table
from crossctr.schema import ConfigError, DatasetSchema


def _write_csv(path: Path, table: pa.Table) -> Path:
    pacsv.write_csv(table, path)
    return path


def _schema(path: Path, **over) -> DatasetSchema:
    base = {
        "name": "t",
        "path": str(path),
        "label": "click",
        "domain": {"column": "site", "values": ["A", "B"]},
        "features": [{"name": "brand", "kind": "categorical"}, {"name": "price", "kind": "numeric"}],
    }
    base.update(over)
    return DatasetSchema.model_validate(base)


def _table(**cols) -> pa.Table:
    base = {
        "site": ["A", "B", "A", "B"],
        "brand": ["x", "y", "x", "z"],
        "price": [1.0, 2.0, 3.0, 4.0],
        "click": [0, 1, 1, 0],
    }
    base.update(cols)
    return pa.table(base)


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    p = _write_csv(tmp_path / "log.csv", _table().drop_columns(["price"]))
    with pytest.raises(DataError, match=r"log\.csv.*missing column\(s\) \['price'\]"):
        load_dataset_table(_schema(p), tmp_path)


def test_label_outside_0_1_names_rows(tmp_path: Path) -> None:
    p = _write_csv(tmp_path / "log.csv", _table(click=[0, 1, 2, 5]))
    with pytest.raises(
        DataError, match=r"log\.csv: column 'click' \(label\) must be 0 or 1; rows 3, 4 hold \[2\.0, 5\.0\]"
    ):
        load_dataset_table(_schema(p), tmp_path)


def test_missing_label_names_rows(tmp_path: Path) -> None:
    p = tmp_path / "log.parquet"
    import pyarrow.parquet as pq

    pq.write_table(_table(click=pa.array([0, None, 1, 0], type=pa.int64())), p)
    with pytest.raises(DataError, match=r"log\.parquet: column 'click' \(label\) is missing on rows 2"):
        load_dataset_table(_schema(p), tmp_path)


def test_undeclared_domain_names_value_and_rows(tmp_path: Path) -> None:
    p = _write_csv(tmp_path / "log.csv", _table(site=["A", "B", "Q", "A"]))
    with pytest.raises(DataError, match=r"column 'site' \(domain\).*\['Q'\] on rows 3"):
        load_dataset_table(_schema(p), tmp_path)


def test_non_numeric_value_in_numeric_column(tmp_path: Path) -> None:
    p = _write_csv(tmp_path / "log.csv", _table(price=["1.5", "cheap", "2", ""]))
    with pytest.raises(DataError, match=r"column 'price' is declared numeric but rows 2 hold non-numbers \['cheap'\]"):
        load_dataset_table(_schema(p), tmp_path)


def test_file_not_found_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_dataset_table(_schema(tmp_path / "nope.csv"), tmp_path)
    (tmp_path / "log.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        load_dataset_table(_schema(tmp_path / "log.xlsx"), tmp_path)


def test_csv_and_parquet_give_the_same_encoding(tmp_path: Path, tiny_table) -> None:
    import pyarrow.parquet as pq

    t = tiny_table(500)
    pq.write_table(t, tmp_path / "a.parquet")
    pacsv.write_csv(t, tmp_path / "a.csv")
    feats = [
        {"name": "brand", "kind": "categorical"},
        {"name": "price", "kind": "numeric"},
        {"name": "user", "kind": "categorical"},
    ]
    dom = {"column": "site", "values": ["A", "B", "C"]}
    a = prepare(_schema(tmp_path / "a.parquet", features=feats, domain=dom), tmp_path)
    b = prepare(_schema(tmp_path / "a.csv", features=feats, domain=dom), tmp_path)
    assert (a.train.features == b.train.features).all()
    assert (a.test.label == b.test.label).all()


def test_unknown_schema_key_lists_allowed_keys(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text(
        "name: t\npath: x.csv\nlabel: click\ndomain: {column: site, values: [A, B]}\n"
        "features: [{name: brand, kind: categorical, bucket: 5}]\n"
    )
    with pytest.raises(
        ConfigError, match=r"features\.0\.bucket: unknown key; allowed keys here: buckets, group, kind, min_count, name"
    ):
        DatasetSchema.from_yaml(tmp_path / "d.yaml")


def test_domain_without_training_rows_is_an_error(tmp_path: Path) -> None:
    t = _table(site=["A", "A", "B", "B"]).append_column("split", pa.array(["train", "train", "valid", "test"]))
    with pytest.raises(DataError, match=r"domain\(s\) \['B'\] have no training rows"):
        prepare(_schema(tmp_path / "x.csv", split={"kind": "column"}), tmp_path, t)


def test_split_table_called_directly_refuses_a_text_time_column() -> None:
    """split_table is public: on a table that skipped validation a non-numeric day column is a DataError, not a pyarrow
    error."""
    from crossctr.data.dataset import split_table

    schema = DatasetSchema.model_validate(
        {
            "name": "t",
            "path": "t.csv",
            "label": "y",
            "domain": {"column": "d", "values": ["A", "B"]},
            "features": [{"name": "f", "kind": "categorical"}],
            "split": {"kind": "time", "column": "day", "valid_start": 2, "test_start": 3},
        }
    )
    table = pa.table({"d": ["A", "B"], "y": [0, 1], "f": ["x", "y"], "day": ["monday", "tuesday"]})
    with pytest.raises(DataError, match=r"split column 'day' must be numeric \(a day or timestamp\), got string"):
        split_table(table, schema)
