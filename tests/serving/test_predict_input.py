"""How `crossctr predict` and the service read their input (issues 14 and 15): the dataset's
encoding and format, columns named by name, and one meaning of a missing value everywhere."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

with warnings.catch_warnings():  # starlette prefers httpx2 for its TestClient; httpx still works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from crossctr.cli import cli
from crossctr.data.encoders import FeatureEncoder
from crossctr.data.io import DataError
from crossctr.inference import Predictor
from crossctr.schema import FormatSpec
from crossctr.serving.app import ServeLimits, create_app
from crossctr.serving.predict import predict_file


@pytest.fixture(scope="module")
def rows(tiny_table) -> pa.Table:
    t = tiny_table(300, seed=11).drop_columns(["click"])
    brand = t.column("brand").to_pylist()
    brand[:3] = ["caf\u00e9", "na\u00efve", "caf\u00e9"]  # not ASCII: the encoding matters
    return t.set_column(t.column_names.index("brand"), "brand", pa.array(brand))


def _latin1_csv(rows: pa.Table, path: Path) -> None:
    pacsv.write_csv(rows, path)
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))


def _with_schema(predictor: Predictor, **update) -> Predictor:  # type: ignore[no-untyped-def]
    enc = FeatureEncoder(predictor.encoder.schema.model_copy(update=update))
    enc.encoders_ = predictor.encoder.encoders_
    return Predictor(enc, predictor.members, predictor.route, predictor.config)


def test_predict_honours_the_dataset_encoding(tmp_path: Path, predictor, rows) -> None:
    _latin1_csv(rows, tmp_path / "in.csv")
    want = predictor.predict(rows)
    with pytest.raises(
        DataError, match=r"in\.csv: text that is not valid utf-8 in column 'brand' on rows 1, 2, 3.*`encoding:`"
    ):
        predict_file("unused", tmp_path / "in.csv", tmp_path / "out.csv", progress=False, predictor=predictor)
    latin = _with_schema(predictor, encoding="latin-1")
    predict_file("unused", tmp_path / "in.csv", tmp_path / "out.parquet", progress=False, predictor=latin)
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.column("brand").to_pylist()[:2] == ["caf\u00e9", "na\u00efve"]
    np.testing.assert_allclose(got.column("score").to_numpy(), want, rtol=0, atol=1e-7)


def test_predict_encoding_option(tmp_path: Path, run_dir: Path, predictor, rows) -> None:
    _latin1_csv(rows, tmp_path / "in.csv")

    def predict(out: str, encoding: str) -> Result:
        args = ["predict", str(run_dir), str(tmp_path / "in.csv"), "--out", str(tmp_path / out), "--no-progress"]
        return CliRunner().invoke(cli, [*args, "--encoding", encoding])

    r = predict("out.parquet", "latin-1")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(
        pq.read_table(tmp_path / "out.parquet").column("score").to_numpy(), predictor.predict(rows), rtol=0, atol=1e-7
    )
    r = predict("o2.csv", "klingon")
    assert isinstance(r.exception, DataError) and "'klingon' is not a text encoding" in str(
        r.exception
    )  # the CLI prints it as one line


def test_predict_names_the_column_and_row_not_an_index(tmp_path: Path, predictor, rows) -> None:
    pacsv.write_csv(rows, tmp_path / "in.csv")
    lines = (tmp_path / "in.csv").read_text().splitlines()
    head = lines[0].split(",")
    cells = lines[4].split(",")
    cells[head.index('"price"')] = '"cheap"'
    lines[4] = ",".join(cells)
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        predict_file("unused", tmp_path / "in.csv", tmp_path / "out.csv", progress=False, predictor=predictor)
    msg = str(info.value)
    assert "column 'price'" in msg and "rows 4" in msg and "cheap" in msg and "#" not in msg


def test_predict_a_headerless_file_of_the_dataset_format(tmp_path: Path, predictor, rows) -> None:
    cols = ["site", "brand", "price", "user"]
    (tmp_path / "in.dat").write_text(
        "# scored later\n"
        + "".join(
            "\t".join("" if v is None else str(v) for v in r.values()) + "\n" for r in rows.select(cols).to_pylist()
        )
    )
    headerless = _with_schema(
        predictor, format=FormatSpec(kind="csv", delimiter="\t", header=False, columns=cols, comment="#")
    )
    predict_file("unused", tmp_path / "in.dat", tmp_path / "out.parquet", progress=False, predictor=headerless)
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.column_names == [*cols, "score"] and pa.types.is_float64(got.schema.field("price").type)
    np.testing.assert_allclose(got.column("score").to_numpy(), predictor.predict(rows), rtol=0, atol=1e-6)


def test_empty_category_scores_as_missing_in_predict_and_serve(tmp_path: Path, run_dir: Path, predictor) -> None:
    """An empty cell in a file and JSON null in a request are both the missing value."""
    base = {"site": "B", "brand": "b3", "price": 0.25, "user": "u17"}
    table = pa.Table.from_pylist(
        [{**base, "brand": ""}, {**base, "brand": None}],
        schema=pa.schema(
            [("site", pa.string()), ("brand", pa.string()), ("price", pa.float64()), ("user", pa.string())]
        ),
    )
    pacsv.write_csv(table, tmp_path / "in.csv")
    predict_file(run_dir, tmp_path / "in.csv", tmp_path / "out.csv", progress=False, predictor=predictor)
    from_file = pacsv.read_csv(tmp_path / "out.csv").column("score").to_numpy()
    with TestClient(
        create_app(run_dir, engine="torch", limits=ServeLimits(max_body_bytes=20_000, max_rows=50))
    ) as client:
        r = client.post("/v1/score", json={"rows": [{**base, "brand": ""}, {**base, "brand": None}]})
    assert r.status_code == 200, r.text
    served = np.array(r.json()["scores"])
    assert abs(from_file[0] - from_file[1]) < 1e-7 and np.abs(served - from_file).max() < 1e-5


def test_run_folder_with_an_old_encoders_json_loads_and_scores_alike(
    tmp_path: Path, run_dir: Path, predictor, rows
) -> None:
    old = tmp_path / "old"
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("checkpoint"))
    doc = json.loads((old / "encoders.json").read_text())
    for key in ("sources", "format", "label_positive", "allow_constant_features", "allow_single_class"):
        doc["schema"].pop(key, None)  # what encoders.json held before these keys existed
    for f in doc["schema"]["features"]:
        f.pop("per_domain", None)
    (old / "encoders.json").write_text(json.dumps(doc))
    again = Predictor.load(old)
    np.testing.assert_allclose(again.predict(rows), predictor.predict(rows), rtol=0, atol=0)


def test_predict_a_file_of_one_domain_without_a_domain_column(tmp_path: Path, predictor, rows) -> None:
    one = rows.filter(pa.compute.equal(rows.column("site"), "B"))
    pq.write_table(one.drop_columns(["site"]), tmp_path / "b.parquet")
    with pytest.raises(
        DataError,
        match=r"no domain column 'site'; if every row is of one domain, say which \(`crossctr predict --domain NAME`",
    ):
        predict_file("unused", tmp_path / "b.parquet", tmp_path / "out.parquet", progress=False, predictor=predictor)
    with pytest.raises(DataError, match=r"domain 'Z' is not one the model was trained on"):
        predict_file(
            "unused", tmp_path / "b.parquet", tmp_path / "out.parquet", progress=False, predictor=predictor, domain="Z"
        )
    predict_file(
        "unused", tmp_path / "b.parquet", tmp_path / "out.parquet", progress=False, predictor=predictor, domain="B"
    )
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.column_names == [*one.drop_columns(["site"]).column_names, "score"]
    np.testing.assert_allclose(got.column("score").to_numpy(), predictor.predict(one), rtol=0, atol=1e-7)
