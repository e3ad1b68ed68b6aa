"""One tiny seeded multi-domain fixture shared by the tests."""

from __future__ import annotations

import copy
import os
from pathlib import Path

# OpenMP threads spinning at barriers make torch several times slower whenever another process
# holds a core (benchmarks/README.md); the tests, and the processes they start, wait passively.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from crossctr.data.dataset import PreparedData, prepare
from crossctr.schema import DatasetSchema

TINY_SCHEMA = {
    "name": "tiny",
    "path": "tiny.parquet",
    "label": "click",
    "domain": {"column": "site", "values": ["A", "B", "C"]},
    "features": [
        {"name": "brand", "kind": "categorical", "group": "brand"},
        {"name": "price", "kind": "numeric", "group": "price", "buckets": 8},
        {"name": "user", "kind": "categorical", "group": "personal", "min_count": 2},
    ],
    "split": {"kind": "random", "seed": 1},
}


def tiny_table(n: int = 3000, seed: int = 7) -> pa.Table:
    """Clicks depend on brand on B, on price on C, on both on A: a learnable cross-domain toy."""
    rng = np.random.default_rng(seed)
    site = rng.choice(np.array(["A", "B", "C"]), n, p=[0.6, 0.3, 0.1])
    brand = rng.integers(0, 20, n)
    price = rng.normal(size=n)
    user = rng.integers(0, 300, n)
    logit = np.where(
        site == "B", 1.2 * (brand % 4 - 1.5), np.where(site == "C", -2.0 * price, 0.6 * (brand % 4 - 1.5) - price)
    )
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    price_col = pa.array(price, mask=rng.random(n) < 0.05)  # some missing values
    return pa.table(
        {
            "site": site,
            "brand": [f"b{b}" for b in brand],
            "price": price_col,
            "user": [f"u{u}" for u in user],
            "click": click,
        }
    )


@pytest.fixture(scope="session", name="tiny_table")
def tiny_table_fixture():
    return tiny_table


@pytest.fixture(scope="session")
def tiny_schema() -> DatasetSchema:
    return DatasetSchema.model_validate(TINY_SCHEMA)


@pytest.fixture(scope="session")
def tiny_data(tiny_schema: DatasetSchema) -> PreparedData:
    return prepare(tiny_schema, Path("."), tiny_table())


@pytest.fixture()
def tiny_dataset_dir(tmp_path: Path) -> Path:
    """A dataset folder as a user would have it: Parquet file + dataset YAML."""
    pq.write_table(tiny_table(), tmp_path / "tiny.parquet")
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(TINY_SCHEMA))
    return tmp_path


@pytest.fixture()
def cli_run(monkeypatch, capsys):
    """`cli_run(*ARGS)`: `crossctr ARGS` as the console script runs it -> (exit status, stderr); never a traceback."""
    import sys

    from crossctr.cli import main

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["crossctr", *args])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        return code, err

    return run


@pytest.fixture()
def cli_process():
    """`cli_process(*ARGS, timeout=None)`: `python -m crossctr ARGS` in a fresh process -> CompletedProcess (text)."""
    import subprocess
    import sys

    def run(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crossctr", *args], capture_output=True, text=True, timeout=timeout
        )

    return run


@pytest.fixture(scope="session")
def tiny_fit_auc():
    """`tiny_fit_auc(model, data)`: 4 epochs of Adam (lr 3e-3, batch 128, seeded order) on data.train,
    then the test AUC: the shared "does it learn at all" check of the model tests."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    from crossctr.data.dataset import iterate_batches

    def fit(model, data) -> float:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(4):
            for batch in iterate_batches(data.train, 128, shuffle=True, generator=g):
                loss = F.binary_cross_entropy_with_logits(model(batch).logits, batch.label)
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            p = model(data.test.as_batch()).logits.numpy()
        return float(roc_auc_score(data.test.label.numpy(), p))

    return fit


def two_site_spec(
    name: str, path: str, features: list[dict], label: str = "click", domain: str = "site", **more: object
) -> dict:
    """A dataset spec (the YAML a user writes, as a dict) over a table whose `domain` column holds
    platforms A and B: the layout of the tests' small tables. `more`: further keys (split, tasks...)."""
    sites = {"column": domain, "values": ["A", "B"]}
    return dict(name=name, path=path, label=label, domain=sites, features=features, **more)


@pytest.fixture(scope="session")
def spec_of():  # type: ignore[no-untyped-def]
    """`two_site_spec`, for the test modules (a conftest is not imported by name)."""
    return two_site_spec


# A dataset with one feature of every kind (categorical, numeric, hashed, crossed, multi-valued),
# used by the prepare tests and the serving tests of the same file layout (kinds.parquet).
KINDS_SPEC = two_site_spec(
    "kinds",
    "kinds.parquet",
    [
        {"name": "brand", "kind": "categorical"},
        {"name": "price", "kind": "numeric", "boundaries": [-1.0, 0.0, 1.0]},
        {"name": "item", "kind": "hashed", "buckets": 64},
        {"name": "brand_x_price", "kind": "crossed", "columns": ["brand", "price"], "buckets": 128},
        {"name": "genres", "kind": "multi", "separator": "|", "max_len": 3},
    ],
)


@pytest.fixture(scope="session")
def kinds_spec() -> dict:
    """The every-kind dataset spec (a fresh copy: a test may edit it)."""
    return copy.deepcopy(KINDS_SPEC)
