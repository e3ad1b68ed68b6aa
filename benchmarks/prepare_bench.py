"""Benchmark of `crossctr prepare` (not a test): throughput, memory bound, data wait in training.

    .venv/bin/python benchmarks/prepare_bench.py [--rows 20000000] [--max-memory 1GB]

1. Throughput: MovieLens-1M written as a dataset folder (crossctr.data.movielens), then
   prepared; rows/s end to end (both passes) and per pass.
2. Memory bound: a synthetic click log of `--rows` rows (default 20 M) written as 1 M-row
   Parquet shards (numpy + pyarrow, in chunks), then prepared by `crossctr prepare
   --max-memory` in a child process, whose peak resident memory (getrusage ru_maxrss) is
   compared with the bound. Features: categorical brand (2,000 values), numeric price
   (quantiles, 3 % missing), hashed user (5 M ids), crossed brand x price, multi-valued genres.
3. Data wait: CNAN-AT (paper sizes) trained on the memory-mapped ML-1M arrays for a few hundred
   steps; the time spent fetching batches (index gather from the memory map) against the time
   spent in forward / backward / Adam. The page cache is warm (the arrays were just written).

Real data is read where it lies ($CROSSCTR_DATA_ROOT or shared/data beside the repository);
part 1 and 3 are skipped without it. Everything is written under --work (a temporary folder
by default) and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

SHARD_ROWS = 1_000_000
# fmt: off
GENRES = [
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
# fmt: on


def data_root() -> Path:
    env = os.environ.get("CROSSCTR_DATA_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------ 1. MovieLens


def bench_movielens(work: Path) -> Path | None:
    from crossctr.data.movielens import write_movielens_dataset
    from crossctr.data.prepare import PrepareOptions, prepare_dataset

    raw = data_root() / "movielens-1m"
    if not raw.is_dir():
        print(f"[1] MovieLens-1M not found under {raw.parent}: skipped")
        return None
    yml = write_movielens_dataset(raw, work / "ml1m", version="1m")
    out = work / "ml1m-prepared"
    best = None
    for _ in range(2):  # the second run has the file in the page cache, like the first pass of the first
        r = prepare_dataset(yml, out, PrepareOptions(progress=False, force=True))
        best = r if best is None or r.seconds < best.seconds else best
    assert best is not None
    rows = sum(best.rows.values())
    print(
        f"[1] MovieLens-1M: {rows:,} rows, 19 features, prepared in {best.seconds:.2f} s "
        f"= {rows / best.seconds:,.0f} rows/s end to end ({2 * rows / best.seconds:,.0f} "
        f"rows/s per pass; batch {best.batch_rows:,} rows)"
    )
    return out


# ------------------------------------------------------------------------------ 2. 20 M rows


def write_synthetic(folder: Path, rows: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    brands = pa.array([f"brand_{i:04d}" for i in range(2000)])
    combos = pa.array(["|".join(rng.choice(GENRES, rng.integers(1, 4), replace=False)) for _ in range(400)])
    for i, start in enumerate(range(0, rows, SHARD_ROWS)):
        n = min(SHARD_ROWS, rows - start)
        site = rng.choice(3, n, p=[0.92, 0.075, 0.005]).astype(np.int32)  # the paper's A : B : C proportion
        brand = np.minimum(rng.zipf(1.3, n) - 1, 1999).astype(np.int32)
        price = rng.lognormal(3.0, 1.0, n)
        user = rng.integers(0, 5_000_000, n)
        genre = rng.integers(0, len(combos), n).astype(np.int32)
        logit = -1.0 + 0.3 * (brand % 5 == 0) - 0.2 * np.log1p(price) / 3 + 0.4 * (site == 1)
        click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
        table = pa.table(
            {
                "platform": pa.DictionaryArray.from_arrays(pa.array(site), pa.array(["A", "B", "C"])),
                "click": click,
                "item_brand": pa.DictionaryArray.from_arrays(pa.array(brand), brands),
                "price": pa.array(price, mask=rng.random(n) < 0.03),
                "user_id": pc.binary_join_element_wise("u", pa.array(user).cast(pa.string()), ""),
                "genres": pa.DictionaryArray.from_arrays(pa.array(genre), combos),
            }
        )
        pq.write_table(table, folder / f"part-{i:05d}.parquet")
    spec = {
        "name": "synthetic-clicks",
        "path": folder.name,
        "label": "click",
        "domain": {"column": "platform", "values": ["A", "B", "C"]},
        "features": [
            {"name": "item_brand", "kind": "categorical", "group": "brand", "min_count": 5},
            {"name": "price", "kind": "numeric", "group": "price", "buckets": 20},
            {"name": "user_id", "kind": "hashed", "group": "personal", "buckets": 1 << 20},
            {
                "name": "brand_x_price",
                "kind": "crossed",
                "group": "brand",
                "columns": ["item_brand", "price"],
                "buckets": 1 << 16,
            },
            {"name": "genres", "kind": "multi", "group": "item", "separator": "|", "max_len": 3},
        ],
        "split": {"kind": "random", "fractions": [0.8, 0.1, 0.1], "seed": 0},
    }
    yml = folder.parent / "synthetic.yaml"
    yml.write_text(yaml.safe_dump(spec, sort_keys=False))
    return yml


_CHILD = """
import resource, sys
from crossctr.cli import main
sys.argv = ["crossctr", "prepare", *sys.argv[1:]]
try:
    main()
finally:
    print(f"PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
"""


def bench_big(work: Path, rows: int, max_memory: str) -> None:
    from crossctr.data.prepare import parse_memory

    t0 = time.perf_counter()
    yml = write_synthetic(work / "synthetic" / "shards", rows)
    size = sum(p.stat().st_size for p in (work / "synthetic" / "shards").iterdir())
    print(
        f"[2] wrote {rows:,} rows as {rows // SHARD_ROWS} Parquet shards "
        f"({size / 1e6:,.0f} MB) in {time.perf_counter() - t0:.0f} s"
    )
    out = work / "synthetic" / "prepared"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(yml), "--out", str(out), "--max-memory", max_memory, "--no-progress"],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr)
        raise SystemExit(f"prepare failed with exit code {proc.returncode}")
    peak = int(proc.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0]) * 1024
    bound = parse_memory(max_memory)
    manifest = json.loads((out / "prepared.json").read_text())
    written = sum(p.stat().st_size for p in out.glob("*.npy"))
    print(
        f"[2] prepare --max-memory {max_memory}: {rows:,} rows in "
        f"{seconds:.0f} s = {rows / seconds:,.0f} rows/s end to end "
        f"(batch {manifest['batch_rows']:,} rows); peak RSS {peak / 1e6:,.0f} MB vs bound {bound / 1e6:,.0f} MB: "
        f"{'HELD' if peak <= bound else 'EXCEEDED'}; arrays {written / 1e6:,.0f} MB on disk"
    )
    print(f"    {proc.stdout.strip().splitlines()[-1]}")
    shutil.rmtree(work / "synthetic", ignore_errors=True)


# ------------------------------------------------------------------------------ 3. data wait


def bench_data_wait(prepared: Path, steps: int, batch_size: int) -> None:
    """The library's training step (`Trainer`'s optimizers and `crossctr.losses.Objective`, the
    default config's loss weights), timed apart from the batch fetch."""
    import torch

    from crossctr.data.prepare import load_prepared
    from crossctr.losses import Objective
    from crossctr.models import build_model, parse_model_config
    from crossctr.training.config import TrainConfig
    from crossctr.training.optim import optimizer_step
    from crossctr.training.trainer import make_optimizers

    data = load_prepared(prepared)
    train = data.train
    cfg = TrainConfig(batch_size=batch_size, progress=False)
    n_domains = data.schema.n_domains
    model = build_model(parse_model_config({"name": "cnan"}), data.encoder.cardinalities, n_domains)
    objective = Objective.from_config(cfg, n_domains, train.domain)
    opts = make_optimizers(model, cfg)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train), generator=gen)
    fetch = step = 0.0
    model.train()
    for i in range(steps + 5):
        t0 = time.perf_counter()
        idx = order[(i * batch_size) % max(len(train) - batch_size, 1) :][:batch_size]
        batch = train.batch(idx)
        t1 = time.perf_counter()
        loss, _ = objective(model(batch), batch)
        optimizer_step(loss, opts)
        t2 = time.perf_counter()
        if i >= 5:  # warm-up steps excluded
            fetch += t1 - t0
            step += t2 - t1
    print(
        f"[3] CNAN-AT on memory-mapped ML-1M, batch {batch_size}, {steps} steps, {torch.get_num_threads()} threads: "
        f"fetch {1e3 * fetch / steps:.2f} ms/batch, step {1e3 * step / steps:.1f} ms/batch -> "
        f"{100 * fetch / (fetch + step):.2f} % of training time waiting for data"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000_000, help="rows of the synthetic log (part 2)")
    ap.add_argument("--max-memory", default="1GB", help="bound given to prepare in part 2")
    ap.add_argument("--steps", type=int, default=200, help="training steps timed in part 3")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--skip", choices=["movielens", "big", "wait"], action="append", default=[])
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="prepare-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        prepared = bench_movielens(work) if "movielens" not in args.skip else None
        if "big" not in args.skip:
            bench_big(work, args.rows, args.max_memory)
        if prepared is not None and "wait" not in args.skip:
            bench_data_wait(prepared, args.steps, args.batch_size)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
