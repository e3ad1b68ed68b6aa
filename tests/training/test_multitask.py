"""Multi-task: extra 0/1 labels (schema `tasks`) trained jointly with the click in CNAN-AT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from crossctr.data.batch import Shard
from crossctr.data.dataset import prepare
from crossctr.data.io import DataError
from crossctr.data.prepare import PrepareOptions, load_prepared, prepare_dataset
from crossctr.losses import DomainWeights as W
from crossctr.losses import click_loss, task_counts, task_loss
from crossctr.schema import ConfigError, DatasetSchema
from crossctr.training.distributed import shard_mask
from crossctr.training.run import RunConfig, train_run

SMALL = {"shared_dim": 8, "specific_dim": 2, "attention_hidden": [8, 4], "deep": [32, 16]}


@pytest.fixture(scope="module")
def mt_schema(tiny_schema: DatasetSchema) -> dict:
    return {**tiny_schema.model_dump(mode="json", exclude_none=True), "tasks": ["purchase"]}


@pytest.fixture(scope="module")
def mt_table(tiny_table) -> pa.Table:
    """`purchase` after a click only (missing on the other rows), driven by brand parity."""
    n = 6000
    t = tiny_table(n)
    rng = np.random.default_rng(3)
    brand = np.array([int(b[1:]) for b in t.column("brand").to_pylist()])
    click = t.column("click").to_numpy()
    buy = (rng.random(n) < np.where(brand % 2 == 0, 0.8, 0.15)).astype(float)
    return t.append_column("purchase", pa.array(np.where(click == 1, buy, np.nan), mask=click == 0))


def test_task_loss_is_the_click_loss_form_over_labelled_rows() -> None:
    g = torch.Generator().manual_seed(0)
    logits, dom = torch.randn(50, 2, generator=g), torch.randint(0, 3, (50,), generator=g)
    labels = (torch.rand(50, 2, generator=g) < 0.4).float()
    labels[::3, 1] = float("nan")
    got = task_loss(logits, labels, dom, W(3))
    has = ~torch.isnan(labels[:, 1])

    def per_task(w: W) -> torch.Tensor:
        return click_loss(logits[:, 0], labels[:, 0], dom, w) + click_loss(logits[has, 1], labels[has, 1], dom[has], w)

    assert torch.allclose(got, per_task(W(3)), atol=1e-6)
    rows = task_loss(logits, labels, dom, W(3, "rows"))
    assert torch.allclose(rows, per_task(W(3, "rows")), atol=1e-6)
    # "power" has no per-task factors: its tasks are row means
    assert torch.equal(task_loss(logits, labels, dom, W(3, "power", torch.ones(3))), rows)
    # Data-parallel shares with the global counts average to the global value.
    shard = Shard(2, 50, torch.bincount(dom, minlength=3), task_counts(labels, dom, 3))
    shares = [
        task_loss(logits[m], labels[m], dom[m], W(3, "equal"), shard) * (2 * int(m.sum()) / 50)
        for m in (shard_mask(dom, 3, r, 2) for r in range(2))
    ]
    assert torch.allclose(sum(shares) / 2, got, atol=1e-6)


def test_task_labels_are_validated_and_missing_values_kept(tmp_path: Path, mt_schema: dict, mt_table: pa.Table) -> None:
    schema = DatasetSchema.model_validate(mt_schema)
    data = prepare(schema, tmp_path, mt_table)
    tasks = torch.cat([s.tasks for s in data.splits.values()])
    assert tasks.shape == (6000, 1) and int(torch.isnan(tasks).sum()) == int(
        (mt_table.column("click").to_numpy() == 0).sum()
    )
    bad = mt_table.set_column(mt_table.column_names.index("purchase"), "purchase", pa.array([2.0] + [1.0] * 5999))
    with pytest.raises(
        DataError, match=r"column 'purchase' \(task label\) must be 0, 1 or missing; rows 1 hold \[2.0\]"
    ):
        prepare(schema, tmp_path, bad)
    with pytest.raises(DataError, match=r"table for dataset 'tiny': missing column\(s\) \['purchase'\]"):
        prepare(schema, tmp_path, mt_table.drop_columns(["purchase"]))
    with pytest.raises(ValueError, match="tasks"):
        DatasetSchema.model_validate({**mt_schema, "tasks": ["click"]})


def test_streamed_prepare_keeps_the_task_labels(tmp_path: Path, mt_schema: dict, mt_table: pa.Table) -> None:
    pq.write_table(mt_table, tmp_path / "tiny.parquet")
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(mt_schema))
    memory = prepare(DatasetSchema.model_validate(mt_schema), tmp_path, mt_table)
    res = prepare_dataset(
        tmp_path / "dataset.yaml",
        tmp_path / "prep",
        PrepareOptions(progress=False, max_memory=64 << 30, batch_rows=700),
    )
    streamed = load_prepared(res.out)
    for s in ("train", "valid", "test"):
        assert torch.equal(torch.isnan(streamed.splits[s].tasks), torch.isnan(memory.splits[s].tasks))
        assert torch.equal(torch.nan_to_num(streamed.splits[s].tasks), torch.nan_to_num(memory.splits[s].tasks))


def test_cnan_at_learns_the_second_label_per_domain(tmp_path: Path, mt_schema: dict, mt_table: pa.Table) -> None:
    data = prepare(DatasetSchema.model_validate(mt_schema), tmp_path, mt_table)
    cfg = RunConfig.model_validate(
        {
            "dataset": "unused",
            "model": {"name": "cnan", **SMALL, "tasks": 1},
            "train": {"epochs": 4, "batch_size": 128, "progress": False, "threads": 1, "device": "cpu"},
        }
    )
    res = train_run(cfg, tmp_path / "run", data)
    per_task = json.loads((tmp_path / "run" / "metrics.json").read_text())["tasks"]["purchase"]["test"]
    assert per_task["overall"]["rows"] == float((~torch.isnan(data.test.tasks)).sum())  # labelled rows only
    # Brand parity drives purchases (Bayes AUC about 0.82): learnt, on every domain's rows together.
    assert per_task["overall"]["auc"] > 0.75 and per_task["A"]["auc"] > 0.7, per_task
    assert res.metrics["test"]["A"]["auc"] > 0.6  # and the click is still learnt
    hist = json.loads((tmp_path / "run" / "history.json").read_text())["joint"]
    assert all("tasks" in e["train_loss"] for e in hist)


def test_task_heads_must_match_the_dataset(tmp_path: Path, tiny_data) -> None:
    cfg = RunConfig.model_validate(
        {"dataset": "unused", "model": {"name": "cnan", **SMALL, "tasks": 2}, "train": {"epochs": 1, "progress": False}}
    )
    with pytest.raises(ConfigError, match=r"tasks: 2 extra-task heads, but dataset 'tiny' declares 0"):
        train_run(cfg, tmp_path / "run", tiny_data)


def test_predict_writes_a_score_column_per_task(tmp_path: Path, mt_schema: dict, mt_table: pa.Table) -> None:
    from crossctr.inference import Predictor
    from crossctr.serving.predict import predict_file

    data = prepare(DatasetSchema.model_validate(mt_schema), tmp_path, mt_table)
    cfg = RunConfig.model_validate(
        {
            "dataset": "unused",
            "model": {"name": "cnan", **SMALL, "tasks": 1},
            "train": {"epochs": 1, "batch_size": 256, "progress": False, "threads": 1, "device": "cpu"},
        }
    )
    train_run(cfg, tmp_path / "run", data)
    raw = mt_table.slice(0, 500).drop_columns(["click", "purchase"])  # rows to score carry no labels
    pq.write_table(raw, tmp_path / "in.parquet")
    predict_file(tmp_path / "run", tmp_path / "in.parquet", tmp_path / "out.parquet", progress=False)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column_names[-2:] == ["score", "score_purchase"]
    want = Predictor.load(tmp_path / "run").predict_encoded_all(Predictor.load(tmp_path / "run").encode(raw))
    assert np.allclose(out.column("score").to_numpy(), want["click"]) and np.allclose(
        out.column("score_purchase").to_numpy(), want["purchase"]
    )
