"""Every case of the bad-input corpus (tests/data/corpus/README.md) gives a DataError that names
the problem, the file, the column and the rows, or follows its documented policy."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crossctr.data.dataset import prepare
from crossctr.data.encoders import MISSING_ID
from crossctr.data.io import DataError, load_dataset_table
from crossctr.data.prepare import PrepareOptions, load_dataset, load_prepared, prepare_dataset
from crossctr.schema import ConfigError, DatasetSchema

sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus"))
from make_corpus import GENERATED  # noqa: E402  (the cases made at test time: a 10 MB file, a symlink loop)

CORPUS = Path(__file__).resolve().parent / "corpus"
QUIET = PrepareOptions(progress=False, max_memory=64 << 30)

# case -> patterns that must all appear in the message
ERRORS = {
    "missing_column": [r"missing_column/log\.csv", r"missing column\(s\) \['price'\]"],
    "wrong_type": [
        r"wrong_type/log\.csv",
        r"column 'click' \(label\)",
        r"rows 1, 2, 3, 4, 5 and 19 more",
        r"non-numbers \['no', 'no', 'yes'",
    ],
    "label_outside": [
        r"label_outside/log\.csv",
        r"column 'click' \(label\) must be 0 or 1",
        r"rows 5, 10",
        r"\[-1\.0, 2\.0\]",
    ],
    "label_missing": [r"label_missing/log\.csv", r"column 'click' \(label\) is missing on rows 7$"],
    "unknown_domain": [
        r"unknown_domain/log\.csv",
        r"column 'site' \(domain\)",
        r"\['Z'\] on rows 3\.",
        r"domain\.values",
    ],
    "empty_file": [r"empty_file/log\.csv", r"empty \(0 bytes\)"],
    "header_only": [r"header_only/log\.csv", r"no data rows \(the file has a header only\)"],
    "corrupt_parquet": [r"corrupt_parquet/log\.parquet", r"cannot be read as Parquet \(truncated or corrupt\?\)"],
    "ragged_row": [
        r"ragged_row/log\.csv",
        r"rows 3 do not have as many fields as the header",
        r"5 columns; one row has 4",
    ],
    "shards_columns": [r"shards/part-1\.parquet", r"missing column\(s\) \['brand'\]"],
    "shards_types": [
        r"shards disagree on column 'brand'",
        r"part-0\.parquet stores it as integer",
        r"part-1\.parquet as floating",
    ],
    "non_utf8": [r"non_utf8/log\.csv", r"not valid utf-8 in column 'brand' on rows 6", r"`encoding:`"],
    "numeric_all_nan": [
        r"numeric_all_nan/log\.csv",
        r"numeric column 'price' has no number in the training rows",
        r"--allow-constant-features",
    ],
    "constant_categorical": [
        r"constant_categorical/log\.csv",
        r"column 'brand' \(categorical\) holds a single value \['x'\]",
        r"--allow-constant-features",
    ],
    "no_valid_positives": [
        r"no_valid_positives/log\.csv",
        r"domain 'B' has no positive labels in its valid split \(3 rows\)",
        r"--allow-single-class",
    ],
    "categorical_all_empty": [
        r"categorical_all_empty/log\.csv",
        r"column 'brand' \(categorical\) has no value in the training rows \(all missing or empty\)",
        r"allow_constant_features: true",
    ],
    "no_train_positives": [
        r"no_train_positives/log\.csv",
        r"domain 'B' has no positive labels in its train split \(6 rows\)",
        r"allow_single_class: true",
    ],
    "duplicate_columns": [
        r"duplicate_columns/log\.csv",
        r"column name\(s\) used more than once: 'brand' at positions \[3, 6\]",
        r"Rename",
    ],
    "duplicate_columns_parquet": [r"duplicate_columns_parquet/log\.parquet", r"'brand' at positions \[3, 6\]"],
    "parquet_named_csv": [
        r"parquet_named_csv/log\.csv: is a Parquet file",
        r"rename it to \.parquet or set `format: \{kind: parquet\}`",
    ],
    "gzip_named_csv": [r"gzip_named_csv/log\.csv: is gzip-compressed", r"decompress it first"],
}
# cases that prepare (and train) accept, with what they must equal
ACCEPTED = {
    "valid": "valid",
    "extra_column": "valid",
    "bom_crlf": "valid",
    "label_true_false": "valid",
    "empty_categorical_cells": None,
    "headerless_sources": None,
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_corpus_case_names_the_problem(case: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        prepare_dataset(CORPUS / case / "dataset.yaml", tmp_path / "out", QUIET)
    msg = str(info.value)
    for pattern in ERRORS[case]:
        assert re.search(pattern, msg, flags=re.M), f"{pattern!r} not in {msg!r}"
    assert not (tmp_path / "out").exists()  # nothing half-written is left behind


def test_every_corpus_folder_is_tested() -> None:
    # Python caches (make_corpus.py imported by a test) are not corpus cases.
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(ERRORS) | set(ACCEPTED)


def _verdict(run) -> str:  # type: ignore[no-untyped-def]
    try:
        run()
    except (DataError, ConfigError) as err:
        return f"{type(err).__name__}: {err}"
    return "accepted"


CASES = sorted([p.name for p in CORPUS.iterdir() if p.is_dir()] + list(GENERATED))


@pytest.mark.parametrize("case", CASES)
def test_train_and_prepare_give_the_same_verdict(case: str, tmp_path: Path) -> None:
    """`crossctr train` on a dataset YAML (in memory) and `crossctr prepare` (streamed) read every
    case of the corpus through one path: the same error word for word, or the same arrays."""
    path = GENERATED[case](tmp_path / case) if case in GENERATED else CORPUS / case / "dataset.yaml"
    streamed = _verdict(lambda: prepare_dataset(path, tmp_path / "out", QUIET))
    in_memory = _verdict(lambda: load_dataset(path))
    assert in_memory == streamed
    if case in ERRORS:
        assert streamed.startswith("DataError")
    elif streamed == "accepted":
        memory, prepared = load_dataset(path), load_prepared(tmp_path / "out")
        for split in ("train", "valid", "test"):
            assert (memory.splits[split].features == prepared.splits[split].features).all()
            assert (memory.splits[split].label == prepared.splits[split].label).all()
            assert (memory.splits[split].domain == prepared.splits[split].domain).all()


def test_the_six_former_disagreements_are_cases() -> None:
    """Logs as users have them: labels true/false, an all-NaN numeric column, an all-empty categorical column, a
    domain without positives in train, duplicate CSV columns, a 10 MB cell."""
    six = {
        "label_true_false",
        "numeric_all_nan",
        "categorical_all_empty",
        "no_train_positives",
        "duplicate_columns",
        "huge_cell",
    }
    assert six <= set(CASES)


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_accepted_cases_read_as_documented(case: str, tmp_path: Path) -> None:
    data = load_dataset(CORPUS / case / "dataset.yaml")
    same_as = ACCEPTED[case]
    if same_as is not None:
        ref = load_dataset(CORPUS / same_as / "dataset.yaml")
        for split in ("train", "valid", "test"):
            assert (data.splits[split].features == ref.splits[split].features).all()
            assert (data.splits[split].label == ref.splits[split].label).all()
    if case == "empty_categorical_cells":  # an empty cell is missing, as JSON null is in the service
        raw = load_dataset_table(data.schema, CORPUS / case)
        assert raw.column("brand").null_count == 2
        assert (data.encoder.transform(raw)[[3, 8], 0] == MISSING_ID).all()
        assert "" not in data.encoder.encoders_["brand"].vocab_
    if case == "headerless_sources":  # two header-less files, one per domain, label from stars >= 4
        ref = load_dataset(CORPUS / "valid" / "dataset.yaml")
        assert sorted(data.schema.domain.values) == ["A", "B"]
        for split in ("train", "valid", "test"):
            assert len(data.splits[split]) == len(ref.splits[split])
            assert data.splits[split].label.sum() == ref.splits[split].label.sum()


def test_huge_cell_is_read_whole(tmp_path: Path) -> None:
    path = GENERATED["huge_cell"](tmp_path / "case")
    data = load_dataset(path)
    assert max(len(v) for v in data.encoder.encoders_["brand"].vocab_) == 10 << 20


def test_extra_column_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        prepare_dataset(CORPUS / "extra_column" / "dataset.yaml", tmp_path / "out", QUIET)
    assert any(
        "ignoring column(s) not named in the dataset YAML: ['note']" in r.getMessage()
        and "extra_column/log.csv" in r.getMessage()
        for r in caplog.records
    )
    clean = load_prepared(prepare_dataset(CORPUS / "valid" / "dataset.yaml", tmp_path / "clean", QUIET).out)
    assert (load_prepared(tmp_path / "out").train.features == clean.train.features).all()


def test_valid_case_prepares_without_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        result = prepare_dataset(CORPUS / "valid" / "dataset.yaml", tmp_path / "out", QUIET)
    assert result.rows == {"train": 12, "valid": 6, "test": 6}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "case,flag",
    [
        ("numeric_all_nan", "allow_constant"),
        ("constant_categorical", "allow_constant"),
        ("no_valid_positives", "allow_single_class"),
    ],
)
def test_flag_turns_the_error_into_a_warning(
    case: str, flag: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        prepare_dataset(
            CORPUS / case / "dataset.yaml",
            tmp_path / "out",
            PrepareOptions(progress=False, max_memory=64 << 30, **{flag: True}),
        )
    assert any(
        case.split("_")[0] in r.getMessage() or "single value" in r.getMessage() or "no positive" in r.getMessage()
        for r in caplog.records
    )
    assert load_prepared(tmp_path / "out").train.features.shape == (12, 2)


def test_non_utf8_prepares_once_the_encoding_is_declared(tmp_path: Path) -> None:
    shutil.copytree(CORPUS / "non_utf8", tmp_path / "case")
    schema = yaml.safe_load((tmp_path / "case" / "dataset.yaml").read_text())
    (tmp_path / "case" / "dataset.yaml").write_text(yaml.safe_dump({**schema, "encoding": "latin-1"}))
    data = load_prepared(prepare_dataset(tmp_path / "case" / "dataset.yaml", tmp_path / "out", QUIET).out)
    assert "caf\u00e9" in data.encoder.encoders_["brand"].vocab_


def test_header_only_shard_among_others_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "shards").mkdir()
    shutil.copy(CORPUS / "valid" / "log.csv", tmp_path / "shards" / "a.csv")
    shutil.copy(CORPUS / "header_only" / "log.csv", tmp_path / "shards" / "b.csv")
    schema = yaml.safe_load((CORPUS / "valid" / "dataset.yaml").read_text())
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({**schema, "path": "shards"}))
    with caplog.at_level(logging.WARNING):
        result = prepare_dataset(tmp_path / "d.yaml", tmp_path / "out", QUIET)
    assert result.rows["train"] == 12
    assert any("b.csv: no data rows (header only); skipping this shard" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "case",
    ["missing_column", "label_outside", "unknown_domain", "ragged_row", "corrupt_parquet", "shards_types", "non_utf8"],
)
def test_in_memory_reader_gives_the_same_errors(case: str) -> None:
    """`crossctr train` on a dataset YAML reads in memory; it reports the same problems."""
    path = CORPUS / case / "dataset.yaml"
    with pytest.raises(DataError) as info:
        prepare(DatasetSchema.from_yaml(path), path.parent)
    assert re.search(ERRORS[case][-1], str(info.value), flags=re.M)


def test_cli_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "crossctr",
            "prepare",
            str(CORPUS / "ragged_row" / "dataset.yaml"),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr
    assert "rows 3 do not have as many fields" in proc.stderr


def test_in_memory_loader_reads_folders_and_globs(tmp_path: Path) -> None:
    schema = DatasetSchema.from_yaml(CORPUS / "valid" / "dataset.yaml")
    (tmp_path / "parts").mkdir()
    lines = (CORPUS / "valid" / "log.csv").read_text().splitlines()
    (tmp_path / "parts" / "p0.csv").write_text("\n".join(lines[:13]) + "\n")
    (tmp_path / "parts" / "p1.csv").write_text("\n".join([lines[0], *lines[13:]]) + "\n")
    whole = load_dataset_table(schema, CORPUS / "valid")
    for path in ("parts", "parts/p*.csv"):
        assert load_dataset_table(schema.model_copy(update={"path": path}), tmp_path).equals(whole)
