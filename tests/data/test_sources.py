"""Real logs as they come: several sources each with its domain, header-less files of
any extension, label rules, per-domain id spaces, loop-safe globs, and old encoders that still load."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from crossctr.data.encoders import MISSING_ID, FeatureEncoder
from crossctr.data.inspect import inspect_dataset
from crossctr.data.io import DOMAIN_SEPARATOR, DataError, load_dataset_table, resolve_input_files, validate_table
from crossctr.data.prepare import PrepareOptions, load_dataset, load_prepared, prepare_dataset
from crossctr.schema import ConfigError, DatasetSchema, parse_label_rule

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "two-platform"
QUIET = PrepareOptions(progress=False, max_memory=64 << 30)
BASE = {"name": "t", "features": [{"name": "brand", "kind": "categorical"}], "split": {"kind": "random", "seed": 0}}


def _write(folder: Path, spec: dict, files: dict[str, str | bytes]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    (folder / "d.yaml").write_text(yaml.safe_dump({**BASE, **spec}))
    return folder / "d.yaml"


def _rows(n: int, sep: str = "\t", seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return "".join(f"b{rng.integers(0, 5)}{sep}{rng.integers(0, 2)}\n" for _ in range(n))


# ------------------------------------------------------------------------ the example sample


def test_example_sample_is_made_by_its_script(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_sample", ROOT / "examples" / "make_two_platform_sample.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.main(tmp_path)
    for name in ("dataset.yaml", "raw/book.dat", "raw/music.dat"):
        assert (tmp_path / name).read_bytes() == (
            EXAMPLE / name
        ).read_bytes(), f"{name} differs from what the script writes"


def test_example_sample_reads_with_label_rule_and_per_domain_items(tmp_path: Path) -> None:
    schema = DatasetSchema.from_yaml(EXAMPLE / "dataset.yaml")
    raw = load_dataset_table(schema, EXAMPLE)
    lines = {
        d: [ln.split("\t") for ln in (EXAMPLE / "raw" / f"{d}.dat").read_text().splitlines() if not ln.startswith("#")]
        for d in ("book", "music")
    }
    assert raw.num_rows == sum(len(v) for v in lines.values())
    want = [int(int(r[2]) >= 4) for d in ("book", "music") for r in lines[d]]
    assert raw.column("rating").to_pylist() == want  # the rule, row for row, in file order
    assert raw.column("domain").to_pylist() == ["book"] * len(lines["book"]) + ["music"] * len(lines["music"])
    items = raw.column("item_id").to_pylist()
    assert items[0] == f"book{DOMAIN_SEPARATOR}{lines['book'][0][1]}"
    assert raw.column("user_id").to_pylist()[0] == lines["book"][0][0]  # users are shared: not namespaced
    # book item 17 and music item 17 are two ids once encoded
    shared = sorted({r[1] for r in lines["book"]} & {r[1] for r in lines["music"]})
    assert len(shared) > 100
    data = load_dataset(EXAMPLE / "dataset.yaml")
    both = pa.table(
        {"domain": ["book", "music"], "user_id": ["1", "1"], "item_id": [shared[0], shared[0]], "rating": [5, 5]}
    )
    ids = data.encoder.transform(validate_table(both, data.schema, "t"))[:, 1]
    assert ids[0] != ids[1]
    # the streamed prepare gives the same arrays
    prepared = load_prepared(prepare_dataset(EXAMPLE / "dataset.yaml", tmp_path / "p", QUIET).out)
    assert (prepared.train.features == data.train.features).all() and (prepared.train.label == data.train.label).all()


def test_inspect_reports_the_cross_domain_overlap(tmp_path: Path) -> None:
    report = inspect_dataset(EXAMPLE / "dataset.yaml", tmp_path / "rep", PrepareOptions(progress=False))
    users = report.summary["features"]["user_id"]["cross_domain"]
    items = report.summary["features"]["item_id"]["cross_domain"]
    assert users["in_several_domains"] > 100 and users["pairs"]["book~music"]["count_rank_correlation"] > 0.3
    assert items["per_domain"] and items["pairs"]["book~music"]["shared"] > 100  # raw overlap, kept apart
    assert abs(items["pairs"]["book~music"]["count_rank_correlation"]) < 0.2
    assert not [p for p in report.summary["problems"] if "accidental" in p]
    assert "## Values shared across domains" in report.markdown and "| user_id |" in report.markdown
    # without per_domain, the item overlap is reported as accidental; the user overlap is not
    spec = yaml.safe_load((EXAMPLE / "dataset.yaml").read_text())
    spec["features"][1].pop("per_domain")
    spec["sources"] = [{**s, "path": str(EXAMPLE / s["path"])} for s in spec["sources"]]
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(spec))
    report = inspect_dataset(tmp_path / "d.yaml", tmp_path / "rep2", PrepareOptions(progress=False))
    problems = [p for p in report.summary["problems"] if "looks accidental" in p]
    assert len(problems) == 1 and "'item_id'" in problems[0] and "per_domain: true" in problems[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "run",
    [
        "model: {name: cnan, shared_dim: 8, specific_dim: 2, attention_hidden: [8, 4], deep: [16, 8]}",
        "model: {name: tower, nn: dcn}\nstrategy: {name: self_train}",  # the former names, still read
    ],
)
def test_example_sample_trains_with_the_cli(tmp_path: Path, run: str, cli_process) -> None:
    (tmp_path / "run.yaml").write_text(
        f"dataset: {EXAMPLE / 'dataset.yaml'}\n{run}\ntrain: {{epochs: 1, progress: false}}\n"
    )
    proc = cli_process("train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert {"book", "music"} <= set(metrics)
    stored = json.loads((tmp_path / "run" / "encoders.json").read_text())["schema"]
    assert stored["label"] == "rating" and stored["label_positive"] == ">= 4"  # the rule travels with the encoders


# ------------------------------------------------------------------------------ file layouts


def test_dat_file_needs_a_format_and_says_so(tmp_path: Path) -> None:
    path = _write(
        tmp_path, {"path": "a.dat", "label": "y", "domain": {"column": "site", "values": ["A", "B"]}}, {"a.dat": "x"}
    )
    with pytest.raises(DataError, match=r"unknown file type '\.dat'.*format: \{kind: csv"):
        resolve_input_files(DatasetSchema.from_yaml(path), tmp_path)


def test_format_options_delimiter_quote_comment_encoding_and_renamed_header(tmp_path: Path) -> None:
    text = '# a comment\nsite;weird name;label\n# another\nA;"caf\u00e9;1\n' + "".join(
        f"{'AB'[i % 2]};b{i % 3};{i % 2}\n" for i in range(20)
    )
    spec = {
        "path": "log.txt",
        "label": "y",
        "domain": {"column": "site", "values": ["A", "B"]},
        "format": {
            "delimiter": ";",
            "quote": None,
            "comment": "#",
            "encoding": "latin-1",
            "columns": ["site", "brand", "y"],
        },
    }
    path = _write(tmp_path, spec, {"log.txt": text.encode("latin-1")})
    table = load_dataset_table(DatasetSchema.from_yaml(path), tmp_path)
    assert table.num_rows == 21
    assert table.column("brand").to_pylist()[0] == '"caf\u00e9'  # no quoting: the quote is a character
    assert table.column("y").to_pylist()[:3] == [1, 0, 1]


def test_bom_and_crlf_are_transparent_in_headerless_and_commented_files(tmp_path: Path) -> None:
    body = "A\tb1\t1\r\nB\tb2\t0\r\nA\tb1\t0\r\nB\tb2\t1\r\n" * 5
    fmt = {"kind": "csv", "delimiter": "\t", "header": False, "columns": ["site", "brand", "y"], "comment": "#"}
    spec = {"path": "x.log", "label": "y", "domain": {"column": "site", "values": ["A", "B"]}, "format": fmt}
    path = _write(tmp_path, spec, {"x.log": b"\xef\xbb\xbf# header comment\r\n" + body.encode()})
    table = load_dataset_table(DatasetSchema.from_yaml(path), tmp_path)
    assert (
        table.num_rows == 20
        and table.column("site").to_pylist()[:2] == ["A", "B"]
        and table.column("brand").to_pylist()[0] == "b1"
    )


def test_sources_with_domains_globs_and_a_domain_column_source(tmp_path: Path) -> None:
    spec = {
        "sources": [{"path": "a/*.tsv", "domain": "A"}, {"path": "b.csv"}],
        "label": "y",
        "domain": {"column": "site", "values": ["A", "B"]},
        "format": {"delimiter": "\t", "header": False, "columns": ["brand", "y"]},
    }
    files = {
        "a/1.tsv": _rows(10),
        "a/2.tsv": _rows(10, seed=1),
        "b.csv": "site,brand,y\n" + "".join(f"B,b{i % 4},{i % 2}\n" for i in range(10)),
    }
    path = _write(tmp_path, spec, files)
    schema = DatasetSchema.from_yaml(path)
    with pytest.raises(DataError, match="b.csv: missing column"):  # the second source inherits the header-less format
        load_dataset_table(schema, tmp_path)
    spec["sources"][1]["format"] = {"delimiter": ",", "header": True, "columns": None}
    path = _write(tmp_path, spec, {})
    table = load_dataset_table(DatasetSchema.from_yaml(path), tmp_path)
    assert table.column("site").to_pylist() == ["A"] * 20 + ["B"] * 10


def test_a_source_domain_and_a_domain_column_in_the_file_is_an_error(tmp_path: Path) -> None:
    spec = {
        "sources": [{"path": "a.csv", "domain": "A"}, {"path": "b.csv", "domain": "B"}],
        "label": "y",
        "domain": {"column": "site"},
    }
    rows = "site,brand,y\n" + "A,x,1\nA,y,0\n"
    path = _write(tmp_path, spec, {"a.csv": rows, "b.csv": rows})
    with pytest.raises(DataError, match=r"a\.csv: has a column 'site', but its source sets domain 'A'"):
        load_dataset_table(DatasetSchema.from_yaml(path), tmp_path)


# ---------------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"path": "a.csv", "sources": [{"path": "b.csv", "domain": "A"}]}, "either as `path:`"),
        (
            {"sources": [{"path": "b.csv", "domain": "A"}, {"path": "c.csv"}], "domain": {"column": "site"}},
            "domain.values is needed unless every source names its domain",
        ),
        (
            {"sources": [{"path": "b.csv", "domain": "Z"}], "domain": {"values": ["A", "B"]}},
            "domain 'Z' is not in domain.values",
        ),
        ({"path": "a.csv", "label": {"col": "r"}}, r"label: a rule is \{column: NAME"),
        ({"path": "a.csv", "label": {"column": "r", "positive": "about 4"}}, "label rule 'about 4' not understood"),
        ({"path": "a.csv", "label": {"column": "r", "positive": ">= high"}}, "compares numbers"),
        ({"path": "a.csv", "format": {"header": False}}, "format.header: false needs format.columns"),
        ({"path": "a.csv", "format": {"delimiter": "::"}}, "format.delimiter must be one character"),
        ({"path": "a.csv", "format": {"kind": "parquet", "delimiter": ","}}, "apply to kind csv only"),
        ({"path": "a.csv", "encoding": "latin-1", "format": {"encoding": "utf-8"}}, "disagree"),
        (
            {"path": "a.csv", "features": [{"name": "p", "kind": "numeric", "per_domain": True}]},
            "per_domain applies to kinds",
        ),
    ],
)
def test_schema_errors_name_the_key(tmp_path: Path, spec: dict, message: str) -> None:
    full = {**BASE, "label": "y", "domain": {"column": "site", "values": ["A", "B"]}, **spec}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(full))
    with pytest.raises(ConfigError, match=message):
        DatasetSchema.from_yaml(tmp_path / "d.yaml")


@pytest.mark.parametrize(
    "rule,values,want",
    [
        (">= 4", [1, 4, 5, 3], [0, 1, 1, 0]),
        ("> 3", ["1", "4", "5", "3"], [0, 1, 1, 0]),
        ("== 5", [5.0, 4.0, 5.0, 1.0], [1, 0, 1, 0]),
        ("in [4, 5]", ["4", "2", "5", "4.0"], [1, 0, 1, 1]),
        ("== yes", ["yes", "no", "yes", "maybe"], [1, 0, 1, 0]),
        ("in [like, 'love']", ["love", "hate", "like", "meh"], [1, 0, 1, 0]),
        ("!= 0", [0, 2, 0, 1], [0, 1, 0, 1]),
    ],
)
def test_label_rules(rule: str, values: list, want: list[int]) -> None:
    schema = DatasetSchema.model_validate(
        {
            **BASE,
            "path": "x.csv",
            "label": {"column": "r", "positive": rule},
            "domain": {"column": "site", "values": ["A", "B"]},
        }
    )
    t = validate_table(
        pa.table({"r": values, "site": ["A", "B", "A", "B"], "brand": ["a", "b", "c", "d"]}), schema, "t"
    )
    assert t.column("r").to_pylist() == want
    assert schema.label_rule == parse_label_rule(rule)


def test_label_rule_missing_and_non_numeric_values_name_the_rows() -> None:
    schema = DatasetSchema.model_validate(
        {
            **BASE,
            "path": "x.csv",
            "label": {"column": "r", "positive": ">= 4"},
            "domain": {"column": "site", "values": ["A", "B"]},
        }
    )
    with pytest.raises(DataError, match=r"column 'r' \(label\) is missing on rows 2"):
        validate_table(pa.table({"r": ["5", "", "1"], "site": ["A", "B", "A"], "brand": ["a", "b", "c"]}), schema, "t")
    with pytest.raises(DataError, match=r"column 'r' \(label\) must be 0 or 1; rows 3 hold non-numbers \['five'\]"):
        validate_table(
            pa.table({"r": ["5", "2", "five"], "site": ["A", "B", "A"], "brand": ["a", "b", "c"]}), schema, "t"
        )


def test_yaml_that_is_not_utf8_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_bytes("name: caf\u00e9\npath: a.csv\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"d\.yaml: not UTF-8 text \(byte 0xe9 on line 1\).*re-save it as UTF-8"):
        DatasetSchema.from_yaml(tmp_path / "d.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "crossctr", "inspect", str(tmp_path / "d.yaml"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "not UTF-8 text" in proc.stderr


def test_old_schema_dumps_keep_their_identity() -> None:
    """Runs recorded before these keys existed keep their fingerprint (experiments' dataset_identity)."""
    old = {**BASE, "path": "x.csv", "label": "y", "domain": {"column": "site", "values": ["A", "B"]}}
    dumped = DatasetSchema.model_validate(old).model_dump(mode="json", exclude={"path"}, exclude_none=True)
    assert set(dumped) == {"name", "encoding", "label", "domain", "features", "split"}
    assert set(dumped["features"][0]) == {"name", "kind", "group", "min_count", "buckets"}


# ------------------------------------------------------------------------------- encoders


def test_encoders_written_before_these_keys_load_and_encode_alike() -> None:
    path = Path(__file__).resolve().parent / "fixtures" / "encoders_v0.json"  # written by crossctr at commit f2ea2ff
    enc = FeatureEncoder.load(path)
    t = pa.table(
        {
            "site": ["A", "B", "A", "B"],
            "click": [0, 1, 1, 0],
            "brand": ["x", "y", "x", "z"],
            "price": [1.0, 2.0, 3.0, 4.0],
            "tags": ["a|b", "b", "c", "a"],
            "user": ["u1", "u2", "u3", "u1"],
        }
    )
    got = enc.transform(validate_table(t, enc.schema, "t"))
    assert got.tolist() == [
        [3, 3, 3, 4, 54],
        [4, 4, 4, 0, 41],
        [3, 5, 5, 0, 28],
        [5, 6, 3, 0, 54],
    ]  # what that commit encoded
    assert enc.schema.label_rule is None and enc.schema.sources is None


def test_empty_text_cell_is_missing_like_null() -> None:
    schema = DatasetSchema.model_validate(
        {
            **BASE,
            "path": "x.csv",
            "label": "y",
            "domain": {"column": "site", "values": ["A", "B"]},
            "features": [{"name": "brand", "kind": "categorical"}, {"name": "h", "kind": "hashed", "buckets": 16}],
        }
    )
    t = pa.table(
        {"y": [0, 1, 0, 1], "site": ["A", "B", "A", "B"], "brand": ["a", "", None, "a"], "h": ["", None, "x", "x"]}
    )
    v = validate_table(t, schema, "t")
    enc = FeatureEncoder(schema).fit(v)
    ids = enc.transform(v)
    assert ids[1, 0] == ids[2, 0] == MISSING_ID and ids[0, 1] == ids[1, 1] == MISSING_ID
    assert enc.encoders_["brand"].vocab_ == ["a"]


# ------------------------------------------------------------------------------------ globs


def test_glob_through_a_symlink_loop_reads_each_file_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "logs" / "day1").mkdir(parents=True)
    (tmp_path / "logs" / "day1" / "part.csv").write_text("site,brand,y\n" + "A,x,1\nB,y,0\nA,z,0\nB,x,1\n")
    os.symlink("..", tmp_path / "logs" / "day1" / "up")  # logs/day1/up -> logs: a cycle for **
    os.symlink("day1/part.csv", tmp_path / "logs" / "alias.csv")  # the same file under a second name
    path = _write(
        tmp_path, {"path": "logs/**/*.csv", "label": "y", "domain": {"column": "site", "values": ["A", "B"]}}, {}
    )
    with caplog.at_level(logging.WARNING):
        files = resolve_input_files(DatasetSchema.from_yaml(path), tmp_path)
        table = load_dataset_table(DatasetSchema.from_yaml(path), tmp_path)
    assert [f.path.name for f in files] == ["alias.csv"] or [f.path.name for f in files] == ["part.csv"]
    assert table.num_rows == 4
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "symbolic link loop" in text and "read once" in text


def test_symlink_loop_as_the_data_path_is_not_file_not_found(tmp_path: Path) -> None:
    os.symlink("a.csv", tmp_path / "b.csv")
    os.symlink("b.csv", tmp_path / "a.csv")
    path = _write(tmp_path, {"path": "a.csv", "label": "y", "domain": {"column": "site", "values": ["A", "B"]}}, {})
    with pytest.raises(DataError, match="symbolic link loop") as info:
        load_dataset(path)
    assert "file not found" not in str(info.value)
    os.symlink("nowhere.csv", tmp_path / "c.csv")
    _write(tmp_path, {"path": "c.csv", "label": "y", "domain": {"column": "site", "values": ["A", "B"]}}, {})
    with pytest.raises(DataError, match=r"a symbolic link to 'nowhere\.csv', which does not exist"):
        load_dataset(path)


def test_one_file_in_two_sources_with_different_domains_is_an_error(tmp_path: Path) -> None:
    spec = {
        "sources": [{"path": "*.dat", "domain": "A"}, {"path": "x.dat", "domain": "B"}],
        "label": "y",
        "format": {"kind": "csv", "header": False, "columns": ["brand", "y"]},
    }
    path = _write(tmp_path, spec, {"x.dat": "a,1\nb,0\n"})
    with pytest.raises(DataError, match=r"x\.dat: named by two sources, with domains 'A' and 'B'"):
        resolve_input_files(DatasetSchema.from_yaml(path), tmp_path)


@pytest.mark.parametrize(
    "pattern",
    ["day=*/part-*.parquet", "**/*.csv", "**/part-?.parquet", "*.csv", "day=[12]/*", "**", "day=2/**", "**/sub/*"],
)
def test_globs_match_what_python_glob_matches_without_links(tmp_path: Path, pattern: str) -> None:
    import glob

    from crossctr.data.io import _walk_glob

    for name in (
        "day=1/part-0.parquet",
        "day=1/x.csv",
        "day=2/part-1.parquet",
        "day=2/sub/part-2.parquet",
        "a.csv",
        ".hid/h.csv",
        "day=2/.p.csv",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    mine = [p.relative_to(tmp_path) for p in _walk_glob(tmp_path, pattern, pattern)]
    ref = sorted(
        Path(p).relative_to(tmp_path) for p in glob.glob(str(tmp_path / pattern), recursive=True) if Path(p).is_file()
    )
    assert mine == ref
