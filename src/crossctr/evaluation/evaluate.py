"""Score a run on the rows it was tested on, and write those rows out.

`evaluate_file` scores a labelled file with a run folder and says what the rows are: the
run's test split (the file is that split, or the training file re-split the way the run
recorded), or just "the rows of FILE", with a warning when some of them are rows the run
trained or validated on. `write_run_splits` writes a run's raw validation and test rows.

Example:
    >>> ev = evaluate_file("runs/cnan", "data/data.parquet")  # doctest: +SKIP
    >>> ev.rows_of, ev.rows
    ('test', 30012)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from crossctr.data.dataset import EncodedSplit, split_table
from crossctr.data.encoders import FeatureEncoder
from crossctr.data.io import DataError, load_dataset_table, read_table
from crossctr.data.prepare import is_prepared
from crossctr.evaluation.metrics import domain_metrics
from crossctr.evaluation.split import digest, keep_domains, load_split_record, locate_rows, row_hashes
from crossctr.inference import Predictor
from crossctr.schema import ConfigError, DatasetSchema

__all__ = ["FileEvaluation", "evaluate_file", "stored_test", "write_run_splits"]


@dataclass
class FileEvaluation:
    metrics: dict[str, dict[str, float]]  # domain -> auc, logloss, rows, ctr; plus "overall"
    rows_of: str  # what the scored rows are, for a table header: "test", "valid", "train" or "file NAME"
    rows: int  # rows scored
    notes: list[str] = field(default_factory=list)  # what was scored, for the reader
    warnings: list[str] = field(default_factory=list)  # the scores do not measure unseen rows


def _plural(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _leak(seen: int, usual: float, rows: int) -> bool:
    """More seen rows than a file of new rows shows: twice its own test split's share, plus 2 % of the rows."""
    return seen > 2 * usual + 0.02 * rows


def stored_test(run_dir: str | Path) -> FileEvaluation:
    """The test metrics the run computed on its own test split when it finished."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise ConfigError(f"{run_dir}: not a finished run folder (no metrics.json)")
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    rows = int(sum(m.get("rows", 0) for k, m in metrics.items() if k != "overall"))
    dataset = (
        json.loads((run_dir / "config.json").read_text())["run"]["dataset"]
        if (run_dir / "config.json").is_file()
        else "the run's dataset"
    )
    note = f"the test split of {dataset}: {_plural(rows, 'row')}, scored when the run finished (metrics.json)"
    return FileEvaluation(metrics, "test", rows, [note])


def evaluate_file(run_dir: str | Path, path: str | Path) -> FileEvaluation:
    """Per-domain metrics of a run on a labelled CSV/Parquet file, honest about which rows they are.

    Rows of domains the run does not cover (a run with `domains:`) are left out with a note.
    When the file is the run's training file (same rows, same order, matched against the
    split the run recorded in split.json) only its test rows are scored.
    """
    run_dir, path = Path(run_dir), Path(path)
    pred = Predictor.load(run_dir)
    schema = pred.encoder.schema
    raw = read_table(
        path, encoding=schema.encoding, fmt=schema.format
    )  # the dataset's text layout (delimiter, header, ...), as training read it
    if schema.label not in raw.column_names:
        raise DataError(f"{path}: evaluation needs the label column {schema.label!r}; the file has {raw.column_names}")
    notes: list[str] = []
    warnings: list[str] = []
    table, kept, dropped = keep_domains(raw, schema.domain.column, pred.domains)
    if dropped:
        others = ", ".join(f"{d} ({n:,})" for d, n in dropped.items())
        notes.append(
            f"left out {_plural(int(sum(dropped.values())), 'row')} of domains the "
            f"run does not cover: {others}; the run covers {', '.join(pred.domains)}"
        )
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows of the run's domains {pred.domains}")
    encoded = pred.encode(table, str(path))
    loc = locate_rows(raw, encoded, kept, load_split_record(run_dir), schema)

    name = path.name
    if loc.resplit:
        notes.append(
            f"{name} is the run's training file: scored the {_plural(len(loc.rows), 'row')} of its test split "
            "(matched against the split the run recorded), not its "
            f"{len(encoded) - len(loc.rows):,} training and validation rows"
        )
        rows_of = "test"
    elif loc.kind == "test":
        notes.append(f"{name} is the run's test split ({_plural(len(loc.rows), 'row')})")
        rows_of = "test"
    elif loc.kind in ("valid", "train"):
        what = (
            "validation split: early stopping picked the epoch on these rows"
            if loc.kind == "valid"
            else "training split: the model was fitted on these rows"
        )
        rows_of = loc.kind
        warnings.append(
            f"{name} is the run's {what}; these scores overstate how it does on new rows. "
            f"`crossctr split {run_dir} --out DIR` writes the test rows"
        )
    else:
        rows_of = f"file {name}"
        if not loc.checked:
            warnings.append(
                f"{run_dir} recorded no split (trained before split.json existed): whether {name} holds rows it "
                "trained on cannot be checked"
            )
        elif any(_leak(n, loc.usual[s], len(encoded)) for s, n in loc.seen.items()):
            seen = " and ".join(
                f"about {n:,} rows it {'trained' if s == 'train' else 'validated'} on" for s, n in loc.seen.items() if n
            )
            warnings.append(
                f"{name} holds {seen} (of {len(encoded):,} rows; rows "
                "that encode alike, estimated from a hashed sample): "
                "these scores overstate how the model does on new rows. "
                f"`crossctr split {run_dir} --out DIR` writes the run's test rows"
            )
        else:
            notes.append(
                f"{name}: {_plural(len(encoded), 'row')}, no more of "
                "them among the rows the run trained or validated on "
                "than its own test split holds (rows that encode alike, hashed sample)"
            )
    scored = encoded if len(loc.rows) == len(encoded) else encoded.select(torch.from_numpy(loc.rows))
    prob = pred.predict_encoded(scored)
    metrics = domain_metrics(scored.label.numpy(), prob, scored.domain.numpy(), pred.domains)
    return FileEvaluation(metrics, rows_of, len(scored), notes, warnings)


def _dataset_yaml(run_dir: Path, dataset: str | Path | None) -> Path:
    if dataset is None:
        config = json.loads((run_dir / "config.json").read_text())
        dataset = config["run"]["dataset"]
        hint = "pass --data DATASET_YAML"
    else:
        hint = "check --data"
    path = Path(dataset)
    if path.is_dir() and is_prepared(path):
        raise ConfigError(
            f"{run_dir} trained from the prepared folder {path}, which keeps "
            "no raw rows; pass --data the dataset YAML it was prepared from"
        )
    if path.is_dir():
        path = path / "dataset.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{path}: the run's dataset YAML is not there (the path is as the "
            f"run recorded it, relative to the folder training ran in); {hint}"
        )
    return path


def write_run_splits(
    run_dir: str | Path, out: str | Path, dataset: str | Path | None = None, fmt: str = "parquet"
) -> dict[str, tuple[Path, int]]:
    """Write the run's validation and test rows (the raw columns the dataset YAML reads) to OUT.

    The rows are re-split from the dataset the run recorded (or `dataset`) and checked against
    the run's split.json: a changed data file is an error, not silently other rows.

    Returns:
        split name -> (file written, rows).
    """
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no config.json)")
    yaml_path = _dataset_yaml(run_dir, dataset)
    schema = DatasetSchema.from_yaml(yaml_path)
    encoder = FeatureEncoder.load(run_dir / "encoders.json")
    domains = list(encoder.schema.domain.values)
    record = load_split_record(run_dir)
    parts = split_table(load_dataset_table(schema, yaml_path.parent), schema)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in ("valid", "test"):
        part, _, _ = keep_domains(parts[name], schema.domain.column, domains)
        if record is not None:
            y = part.column(schema.label).combine_chunks().cast(pa.float32()).to_numpy(zero_copy_only=False)
            enc = EncodedSplit.from_numpy(encoder.transform(part), encoder.domain_ids(part), y)
            if digest(row_hashes(enc)) != record["digest"][name]:
                raise DataError(
                    f"{yaml_path}: its {name} split is not the one {run_dir} recorded ({part.num_rows:,} rows now, "
                    f"{sum(record['rows'][name].values()):,} then): the data "
                    "changed since the run trained, or it is another dataset"
                )
        path = out / f"{name}.{fmt}"
        if fmt == "parquet":
            pq.write_table(part, path)
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(part, path)
        written[name] = (path, part.num_rows)
    return written
