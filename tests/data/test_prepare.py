"""`crossctr prepare`: streaming, bounded-memory preparation into memory-mapped arrays.

The prepared arrays must equal what the in-memory `prepare` builds (same split, same
vocabularies, exact quantiles while the train split fits in the sample), whatever the batch
size or the sharding; the folder is reused while its inputs are unchanged; training runs from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from crossctr.data.dataset import prepare
from crossctr.data.encoders import MISSING_ID, N_RESERVED, OOV_ID, PAD_ID, FeatureEncoder
from crossctr.data.io import DataError
from crossctr.data.prepare import MANIFEST, PrepareOptions, load_dataset, load_prepared, parse_memory, prepare_dataset
from crossctr.layers.embedding import FeatureEmbedding
from crossctr.schema import ConfigError, DatasetSchema

QUIET = PrepareOptions(progress=False, max_memory=64 << 30)  # the process bound is not what these tests are about
SPLITS = ("train", "valid", "test")


def _same(a, b) -> None:
    for s in SPLITS:
        assert torch.equal(a.splits[s].features, b.splits[s].features), s
        assert torch.equal(a.splits[s].domain, b.splits[s].domain), s
        assert torch.equal(a.splits[s].label, b.splits[s].label), s
    assert a.encoder.to_dict()["features"] == b.encoder.to_dict()["features"]


def test_streamed_arrays_equal_the_in_memory_prepare(
    tiny_dataset_dir: Path, tiny_schema: DatasetSchema, tiny_table
) -> None:
    out = prepare_dataset(
        tiny_dataset_dir / "dataset.yaml",
        tiny_dataset_dir / "prep",
        PrepareOptions(progress=False, max_memory=64 << 30, batch_rows=333),
    ).out
    _same(load_prepared(out), prepare(tiny_schema, Path("."), tiny_table()))
    x = np.load(out / "train.features.npy", mmap_mode="r")
    assert (
        x.dtype == np.int32
        and np.load(out / "train.domain.npy").dtype == np.int8
        and np.load(out / "train.label.npy").dtype == np.int8
    )


def test_shards_folder_glob_and_csv_give_the_same_arrays(tiny_dataset_dir: Path, tiny_table) -> None:
    tmp_path = tiny_dataset_dir
    tiny_schema = yaml.safe_load((tmp_path / "dataset.yaml").read_text())
    t = tiny_table()
    (tmp_path / "shards").mkdir()
    for i, start in enumerate(range(0, t.num_rows, 700)):
        part = t.slice(start, 700)
        (pq.write_table if i % 2 else lambda tb, p: pacsv.write_csv(tb, p.with_suffix(".csv")))(
            part, tmp_path / "shards" / f"part-{i:02d}.parquet"
        )
    pq.write_table(t, tmp_path / "one.parquet")
    preps = []
    for name, path in [("one", "one.parquet"), ("folder", "shards"), ("glob", "shards/part-*")]:
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**tiny_schema, "path": path}))
        preps.append(
            load_prepared(
                prepare_dataset(
                    tmp_path / f"{name}.yaml",
                    tmp_path / f"prep-{name}",
                    PrepareOptions(progress=False, max_memory=64 << 30, batch_rows=256),
                ).out
            )
        )
    _same(preps[0], preps[1])
    _same(preps[0], preps[2])


def test_output_does_not_depend_on_batch_size_and_cache_is_reused(tiny_dataset_dir: Path) -> None:
    yml = tiny_dataset_dir / "dataset.yaml"
    a = prepare_dataset(
        yml, tiny_dataset_dir / "a", PrepareOptions(progress=False, max_memory=64 << 30, batch_rows=97, reservoir=500)
    )
    b = prepare_dataset(
        yml, tiny_dataset_dir / "b", PrepareOptions(progress=False, max_memory=64 << 30, batch_rows=5000, reservoir=500)
    )
    _same(load_prepared(a.out), load_prepared(b.out))  # the bottom-k sample ignores batch boundaries
    assert (
        not a.reused
        and prepare_dataset(yml, a.out, PrepareOptions(progress=False, max_memory=64 << 30, reservoir=500)).reused
    )
    assert not prepare_dataset(
        yml, a.out, PrepareOptions(progress=False, max_memory=64 << 30, reservoir=500, force=True)
    ).reused
    assert not prepare_dataset(
        yml, a.out, PrepareOptions(progress=False, max_memory=64 << 30, reservoir=400)
    ).reused  # sampling is in the key
    data = tiny_dataset_dir / "tiny.parquet"
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not prepare_dataset(yml, a.out, QUIET).reused  # a touched input is prepared again


def test_refuses_to_overwrite_an_unrelated_folder(tiny_dataset_dir: Path) -> None:
    (tiny_dataset_dir / "mine").mkdir()
    (tiny_dataset_dir / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="exists and is not a prepared folder"):
        prepare_dataset(tiny_dataset_dir / "dataset.yaml", tiny_dataset_dir / "mine", QUIET)
    assert (tiny_dataset_dir / "mine" / "notes.txt").read_text() == "keep"


def test_memory_bound_is_checked(tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_memory("2GB") == 2_000_000_000 and parse_memory("512MiB") == 512 << 20
    with pytest.raises(ConfigError, match="not understood"):
        parse_memory("lots")
    with pytest.raises(ConfigError, match="leaves no room"):
        prepare_dataset(
            tiny_dataset_dir / "dataset.yaml",
            tiny_dataset_dir / "p",
            PrepareOptions(progress=False, max_memory=parse_memory("10MB")),
        )
    # Vocabulary counts that outgrow the bound stop the run with the fix (hash the feature).
    import crossctr.data.prepare as prep

    monkeypatch.setattr(prep, "_spare_memory", lambda options: 20_000)
    with pytest.raises(DataError, match=r"feature 'user' has .* distinct training values.*kind: hashed"):
        prepare_dataset(
            tiny_dataset_dir / "dataset.yaml",
            tiny_dataset_dir / "p",
            PrepareOptions(progress=False, max_memory=100_000_000, batch_rows=500),
        )


def test_quantiles_from_the_sample_are_close_on_a_large_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    t = pa.table(
        {
            "d": rng.choice(["A", "B"], n),
            "y": rng.integers(0, 2, n),
            "v": rng.lognormal(size=n),
            "c": rng.choice(["p", "q"], n),
        }
    )
    pq.write_table(t, tmp_path / "big.parquet")
    spec = {
        "name": "big",
        "path": "big.parquet",
        "label": "y",
        "domain": {"column": "d", "values": ["A", "B"]},
        "features": [{"name": "v", "kind": "numeric", "buckets": 10}, {"name": "c", "kind": "categorical"}],
    }
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(spec))
    out = prepare_dataset(
        tmp_path / "d.yaml",
        tmp_path / "p",
        PrepareOptions(progress=False, max_memory=64 << 30, reservoir=20_000, batch_rows=30_000),
    ).out
    bounds = np.array(load_prepared(out).encoder.encoders_["v"].boundaries_)
    train = load_prepared(out).train
    x = np.sort(t.column("v").to_numpy())  # rank of each boundary among all values (train is 80 % of them)
    ranks = np.searchsorted(x, bounds) / n
    assert np.abs(ranks - np.arange(1, 10) / 10).max() < 0.01  # 1/sqrt(20,000) = 0.7 %
    counts = np.bincount(train.features[:, 0].numpy(), minlength=N_RESERVED + 10)[N_RESERVED:]
    assert counts.min() > 0.08 * len(train)


def _kinds_dataset(root: Path, spec: dict) -> Path:
    rng = np.random.default_rng(1)
    n = 1200
    genres = np.array(["Action", "Comedy", "Drama", "Kids"])
    cells = ["|".join(rng.choice(genres, rng.integers(1, 4), replace=False)) for _ in range(n)]
    cells[0], cells[1] = None, "Action|Comedy|Drama|Kids|Action"
    t = pa.table(
        {
            "site": rng.choice(["A", "B"], n),
            "click": rng.integers(0, 2, n),
            "brand": [f"b{i}" for i in rng.integers(0, 9, n)],
            "price": rng.normal(size=n),
            "item": [f"i{i}" for i in rng.integers(0, 500, n)],
            "genres": cells,
        }
    )
    pq.write_table(t, root / "kinds.parquet")
    (root / "kinds.yaml").write_text(yaml.safe_dump(spec))
    return root / "kinds.yaml"


def test_hashed_crossed_bucketed_and_multi_features(tmp_path: Path, kinds_spec: dict) -> None:
    yml = _kinds_dataset(tmp_path, kinds_spec)
    data = load_prepared(
        prepare_dataset(yml, tmp_path / "p", PrepareOptions(progress=False, max_memory=64 << 30, batch_rows=200)).out
    )
    enc = data.encoder
    assert data.train.features.shape[1] == 7 and enc.cardinalities == [
        N_RESERVED + 9,
        N_RESERVED + 4,
        N_RESERVED + 64,
        N_RESERVED + 128,
        N_RESERVED + 4,
    ]
    assert enc.cardinalities.slots == (1, 1, 1, 1, 3)
    assert enc.encoders_["price"].boundaries_ == [-1.0, 0.0, 1.0]
    # The same table encoded in memory gives the same ids (hashes do not depend on batches).
    _same(data, prepare(DatasetSchema.from_yaml(yml), tmp_path))
    t = pa.table(
        {
            "site": ["A", "A", "B"],
            "click": [0, 1, 0],
            "brand": ["b1", "b1", None],
            "price": [0.5, 0.5, 3.0],
            "item": ["i7", "i7", None],
            "genres": [None, "Action|Comedy|Drama|Kids", "Zzz|Kids"],
        }
    )
    from crossctr.data.io import validate_table

    x = enc.transform(validate_table(t, enc.schema, "t"))
    assert x[0, 2] == x[1, 2] != MISSING_ID and x[2, 2] == MISSING_ID  # hashed: stable, null is missing
    assert x[0, 3] == x[1, 3] and x[2, 3] == MISSING_ID  # crossed: missing when a part is missing
    assert x[0, 4:].tolist() == [MISSING_ID, PAD_ID, PAD_ID]
    assert (x[1, 4:] >= N_RESERVED).all()  # the fourth value is cut at max_len = 3
    assert x[2, 4] == OOV_ID and x[2, 5] >= N_RESERVED and x[2, 6] == PAD_ID
    assert enc.encoders_["genres"].decode(x[1:2, 4:]) == [["Action", "Comedy", "Drama"]]
    again = FeatureEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert (again.transform(validate_table(t, enc.schema, "t")) == x).all()


def test_multi_valued_slots_are_mean_pooled_in_one_batched_op() -> None:
    torch.manual_seed(0)
    emb = FeatureEmbedding([4, 6], shared_dim=3, specific_dim=2, n_domains=2, slots=[1, 3])
    x = torch.tensor([[2, 3, 4, 0], [1, 5, 0, 0], [3, 5, 5, 5]])
    d = torch.tensor([0, 1, 1])
    out = emb(x, d)  # (B, F, K)
    assert out.shape == (3, 2, 5)
    for i in range(3):
        ids = [int(v) for v in x[i, 1:] if v != PAD_ID]
        rows = torch.stack(
            [torch.cat([emb.shared.weight[4 + v], emb.specific.weight[int(d[i]) * 10 + 4 + v]]) for v in ids]
        )
        assert torch.allclose(out[i, 1], rows.mean(0))
        assert torch.allclose(
            out[i, 0], torch.cat([emb.shared.weight[x[i, 0]], emb.specific.weight[int(d[i]) * 10 + x[i, 0]]])
        )
    # A model rebuilt from the plain cardinalities (as a predictor reads them from JSON) adopts the layout.
    plain = FeatureEmbedding([4, 6], shared_dim=3, specific_dim=2, n_domains=2)
    plain.load_state_dict(emb.state_dict())
    assert torch.equal(plain(x, d), out)
    # All-scalar features keep the old state dict and path.
    assert "slot_field" not in FeatureEmbedding([4, 6], 3, 2, 2, slots=[1, 1]).state_dict()


def test_training_runs_from_a_prepared_folder(tmp_path: Path, kinds_spec: dict) -> None:
    from crossctr.inference import Predictor
    from crossctr.training.run import RunConfig, train_run

    yml = _kinds_dataset(tmp_path, kinds_spec)
    prepare_dataset(yml, tmp_path / "prep", QUIET)
    cfg = RunConfig.model_validate(
        {
            "dataset": str(tmp_path / "prep"),
            "model": {"name": "cnan", "deep": [8], "attention_hidden": [4, 2], "shared_dim": 4, "specific_dim": 2},
            "train": {"epochs": 1, "batch_size": 256, "progress": False},
        }
    )
    assert isinstance(load_dataset(tmp_path / "prep").train.features, torch.Tensor)
    result = train_run(cfg, tmp_path / "run")
    assert np.isfinite(result.metrics["test"]["overall"]["logloss"])
    pred = Predictor.load(tmp_path / "run")
    member = next(iter(pred.members.values()))
    assert member.embedding.slot_field.tolist() == [0, 1, 2, 3, 4, 4, 4]


def test_movielens_100k_prepares_like_the_in_memory_path(tmp_path: Path) -> None:
    # <workspace>/main/tests/data/this_file -> <workspace>/shared/data, as in test_movielens.py
    root = Path(os.environ.get("CROSSCTR_DATA_ROOT") or Path(__file__).resolve().parents[3] / "shared" / "data")
    ML100K = root / "movielens-100k"
    if not ML100K.is_dir():
        pytest.skip(f"{ML100K} not found; set CROSSCTR_DATA_ROOT to the folder holding movielens-100k")
    from crossctr.data.movielens import write_movielens_dataset

    yml = write_movielens_dataset(ML100K, tmp_path / "ml", version="100k")
    streamed = load_prepared(
        prepare_dataset(
            yml, tmp_path / "prep", PrepareOptions(progress=False, max_memory=64 << 30, batch_rows=30_000)
        ).out
    )
    _same(streamed, prepare(DatasetSchema.from_yaml(yml), yml.parent))
    assert json.loads((tmp_path / "prep" / MANIFEST).read_text())["rows"]["train"] == len(streamed.train)
