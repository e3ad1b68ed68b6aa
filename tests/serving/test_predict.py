"""`crossctr predict`: a file in, the same rows plus a score column out, streamed batch by batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from crossctr.cli import cli
from crossctr.data.io import DataError
from crossctr.serving.predict import predict_file


@pytest.fixture(scope="module")
def rows(tiny_table) -> pa.Table:
    t = tiny_table(2500, seed=5)
    # an id column the model does not use rides along untouched
    return t.append_column("request_id", pa.array(np.arange(t.num_rows) * 7))


@pytest.mark.parametrize("src,dst", [("parquet", "parquet"), ("csv", "csv"), ("csv", "parquet"), ("parquet", "tsv")])
def test_same_rows_plus_score_equal_to_predictor(tmp_path: Path, run_dir, predictor, rows, src, dst) -> None:
    inp = tmp_path / f"in.{src}"
    if src == "parquet":
        pq.write_table(rows, inp, row_group_size=600)
    else:
        pacsv.write_csv(rows, inp)
    out = tmp_path / f"out.{dst}"
    res = predict_file(run_dir, inp, out, batch_rows=700, progress=False, predictor=predictor)  # 4 batches
    assert res.rows == rows.num_rows
    got = (
        pq.read_table(out)
        if dst == "parquet"
        else pacsv.read_csv(out, parse_options=pacsv.ParseOptions(delimiter="\t" if dst == "tsv" else ","))
    )
    assert got.column_names == [*rows.column_names, "score"]
    assert got.column("request_id").to_pylist() == rows.column("request_id").to_pylist()
    assert got.column("brand").to_pylist() == rows.column("brand").to_pylist()
    want = predictor.predict(rows)
    np.testing.assert_allclose(got.column("score").to_numpy(), want, rtol=0, atol=1e-7)


def test_unseen_categories_and_missing_values_score(tmp_path: Path, run_dir, predictor, rows) -> None:
    t = rows.set_column(rows.column_names.index("brand"), "brand", pa.array(["never-seen"] * rows.num_rows))
    t = t.set_column(t.column_names.index("price"), "price", pa.nulls(t.num_rows, pa.float64()))
    pq.write_table(t.drop_columns(["click"]), tmp_path / "in.parquet")
    predict_file(run_dir, tmp_path / "in.parquet", tmp_path / "out.parquet", progress=False, predictor=predictor)
    s = pq.read_table(tmp_path / "out.parquet").column("score").to_numpy()
    assert np.isfinite(s).all() and ((s > 0) & (s < 1)).all()


def test_missing_column_names_file_and_column(tmp_path: Path, run_dir, predictor, rows) -> None:
    pacsv.write_csv(rows.drop_columns(["price"]), tmp_path / "in.csv")
    with pytest.raises(DataError, match=r"in\.csv: missing column\(s\) \['price'\]"):
        predict_file(run_dir, tmp_path / "in.csv", tmp_path / "out.csv", progress=False, predictor=predictor)
    assert not list(tmp_path.glob("*out*"))


def test_unknown_domain_names_file_rows_and_leaves_no_output(tmp_path: Path, run_dir, predictor, rows) -> None:
    site = rows.column("site").to_pylist()
    site[1500], site[1503] = "Z", "Y"  # in the third batch of 700 rows
    t = rows.set_column(rows.column_names.index("site"), "site", pa.array(site))
    pq.write_table(t, tmp_path / "in.parquet")
    with pytest.raises(DataError, match=r"in\.parquet: column 'site' \(domain\) .* \['Y', 'Z'\] on rows 1501, 1504;"):
        predict_file(
            run_dir,
            tmp_path / "in.parquet",
            tmp_path / "out.parquet",
            batch_rows=700,
            progress=False,
            predictor=predictor,
        )
    assert not list(tmp_path.glob("*out*")), "a failed run must not leave a partial output"


def test_text_in_numeric_csv_column_is_a_data_error(tmp_path: Path, run_dir, predictor, rows) -> None:
    pacsv.write_csv(rows, tmp_path / "in.csv")
    text = (tmp_path / "in.csv").read_text().splitlines()
    head = text[0].split(",")
    cells = text[5].split(",")
    cells[head.index('"price"')] = '"cheap"'
    text[5] = ",".join(cells)
    (tmp_path / "in.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"in\.csv: .*cheap"):
        predict_file(run_dir, tmp_path / "in.csv", tmp_path / "out.csv", progress=False, predictor=predictor)


def test_refuses_bad_paths_and_an_existing_score_column(tmp_path: Path, run_dir, predictor, rows) -> None:
    pq.write_table(rows, tmp_path / "in.parquet")
    with pytest.raises(DataError, match="unknown output file type '.xlsx'"):
        predict_file(run_dir, tmp_path / "in.parquet", tmp_path / "out.xlsx", progress=False, predictor=predictor)
    with pytest.raises(DataError, match="overwrite the input"):
        predict_file(run_dir, tmp_path / "in.parquet", tmp_path / "in.parquet", progress=False, predictor=predictor)
    with pytest.raises(DataError, match="already has a column 'click'"):
        predict_file(
            run_dir,
            tmp_path / "in.parquet",
            tmp_path / "o.parquet",
            score_column="click",
            progress=False,
            predictor=predictor,
        )
    with pytest.raises(DataError, match="file not found"):
        predict_file(run_dir, tmp_path / "nope.csv", tmp_path / "o.csv", progress=False, predictor=predictor)


def test_cli_predict(tmp_path: Path, run_dir, predictor, rows) -> None:
    pq.write_table(rows, tmp_path / "in.parquet")
    r = CliRunner().invoke(
        cli,
        [
            "predict",
            str(run_dir),
            str(tmp_path / "in.parquet"),
            "--out",
            str(tmp_path / "out.csv"),
            "--no-progress",
            "--batch-rows",
            "1000",
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"scored {rows.num_rows} rows" in r.output
    got = pacsv.read_csv(tmp_path / "out.csv").column("score").to_numpy()
    np.testing.assert_allclose(got, predictor.predict(rows), rtol=0, atol=1e-7)
