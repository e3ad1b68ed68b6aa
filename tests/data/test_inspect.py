"""`crossctr inspect`: counts, rates and cardinalities match the data; problems are listed, not raised."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from click.testing import CliRunner

from crossctr.data.inspect import inspect_dataset
from crossctr.data.prepare import PrepareOptions

CORPUS = Path(__file__).resolve().parent / "corpus"
QUIET = PrepareOptions(progress=False, max_memory=64 << 30)  # the process bound is not what these tests are about


def test_report_figures_match_the_table(tmp_path: Path, spec_of) -> None:  # type: ignore[no-untyped-def]
    t = pa.table(
        {
            "site": ["A", "A", "B", "B", "A", "B", "A", "B"],
            "click": [0, 1, 0, 1, 1, 0, 0, 1],
            "brand": ["x", "y", "x", None, "new", "x", "y", "other"],
            "tags": ["a|b", "b", "a", "c|a|b|d", "zz|a", None, "a", "b"],
            "price": [1.0, None, 2.0, 3.0, 4.0, None, 5.0, 6.0],
            "split": ["train", "train", "train", "train", "valid", "valid", "test", "test"],
        }
    )
    pq.write_table(t, tmp_path / "t.parquet")
    features = [
        {"name": "brand", "kind": "categorical"},
        {"name": "tags", "kind": "multi", "max_len": 2},
        {"name": "price", "kind": "numeric", "buckets": 2},
    ]
    spec = spec_of("t", "t.parquet", features, split={"kind": "column"})
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(spec))
    report = inspect_dataset(tmp_path / "d.yaml", tmp_path / "rep", QUIET)
    s = report.summary
    assert s["domains"]["A"]["train"] == {"rows": 2, "positive_rate": 0.5}
    assert s["domains"]["B"]["valid"] == {"rows": 1, "positive_rate": 0.0}
    brand = s["features"]["brand"]
    assert brand["missing_rate"] == 1 / 8 and brand["missing_rate_per_domain"] == {"A": 0.0, "B": 0.25}
    assert brand["distinct_train_values"] == 2 and brand["oov_rate_valid"] == 0.5 and brand["oov_rate_test"] == 0.5
    tags = s["features"]["tags"]
    assert tags["distinct_train_values"] == 4 and tags["cells_cut_at_max_len"] == 1
    assert tags["oov_rate_valid"] == 0.5  # "zz" of {zz, a}; the missing cell is not a value
    assert s["features"]["price"]["missing_rate"] == 2 / 8
    assert any("no negative labels in its valid split" in p for p in s["problems"])  # listed, not raised
    for name in ("inspect.md", "inspect.json", "domains.png", "features.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    assert (tmp_path / "rep" / "domains.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "rep" / "inspect.json").read_text())["features"]["brand"]["vocabulary"] == 2
    assert "| brand | categorical | 12.5 % | 0.0 % | 25.0 % | 2 values, vocab 2 | 50.0 % | 50.0 % |" in report.markdown


def test_cli_prints_the_markdown(tmp_path: Path) -> None:
    from crossctr.cli import cli

    # The memory bound covers the whole process; inside a long pytest run that process is
    # already large, so give a bound that is not what this test is about.
    mem = ["--max-memory", "64GB"]
    res = CliRunner().invoke(
        cli, ["inspect", str(CORPUS / "valid" / "dataset.yaml"), "--out", str(tmp_path / "r"), "--no-progress", *mem]
    )
    assert res.exit_code == 0, res.output
    assert "## Domains" in res.output and "None found." in res.output
    res = CliRunner().invoke(
        cli, ["prepare", str(CORPUS / "valid" / "dataset.yaml"), "--out", str(tmp_path / "p"), "--no-progress", *mem]
    )
    assert res.exit_code == 0 and "prepared" in res.output
    res = CliRunner().invoke(
        cli, ["prepare", str(CORPUS / "valid" / "dataset.yaml"), "--out", str(tmp_path / "p"), "--no-progress", *mem]
    )
    assert "unchanged inputs: reusing" in res.output
