"""Training and scoring speed of crossctr against peer CTR libraries, on identical data, in one run.

Models (same shape: 24 categorical fields, embedding 64, 2 cross layers + FCN 512 x 256,
batch 4096, Adam lr 1e-3):
    crossctr CNAN-AT        shared network + one private network per domain (3 domains)
    crossctr DCN            `{name: single, network: dcn, attention: false, specific_dim: 0}`
    DeepCTR-Torch DCN       `deepctr_torch.models.DCN`, trained by its own `fit`
    torch-rechub DCN        `torch_rechub.models.ranking.DCN`, trained by its `CTRTrainer`
    FuxiCTR DCN             FuxiCTR's `BaseModel` + `FeatureEmbedding`, `CrossNet`, `MLP_Block`
                            (the package ships no model zoo), trained by its own `train_epoch`
The peers run only where importable (`pip install -e .[bench]`); each runs through its own
public training and scoring entry points, with its own data loader, as its users would.

Each model lives in its own worker process (own peak RSS, own thread setting); repetitions
are interleaved (rep 1 of every model, then rep 2, ...) and medians reported, so a machine
shared with other jobs slows every model alike. One repetition = one epoch over the train
rows + scoring the test rows. Test AUC is read after the first epoch.

Usage:
    make bench                                          # peers installed, full run, writes results
    .venv-bench/bin/python benchmarks/speed.py --rows 200000 --threads 2
    .venv-bench/bin/python benchmarks/speed.py --quick  # smoke run, a minute
    .venv-bench/bin/python benchmarks/speed.py --profile cnan   # torch.profiler table of a few steps
    .venv-bench/bin/python benchmarks/speed.py --against REV --models cnan,dcn,deepctr,rechub,fuxictr
        # crossctr's rows also from the source of git revision REV, interleaved in the same run:
        # the ratios before and after a change, measured side by side
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent

# The shape the issue fixes for every model.
N_FIELDS = 24
VOCAB_MIN, VOCAB_MAX = 10, 100_000  # per-field vocabularies, log-spaced between these
EMB_DIM = 64
CROSS_LAYERS = 2
DEEP = (512, 256)
BATCH = 4096
LR = 1e-3
N_DOMAINS = 3
DOMAIN_SHARE = (0.7, 0.2, 0.1)  # one rich domain, two smaller ones (the paper's setting)
SMALL_ROWS, SMALL_BATCH, SMALL_VOCAB = 133_000, 1024, [5000, 200]  # --small: a two-feature, two-platform dataset
EVAL_BATCH = 8192  # crossctr's default; every library scores with the same batch size

# crossctr's rows, each trained by `Trainer.fit` and scored by `inference.score`, as
# `crossctr train` / `crossctr predict` do. "cnan" and "dcn" are the library defaults (dense
# tables, Adam on everything, fp32); each faster option is its own row:
#   _bf16      train.precision: bf16 (bfloat16 autocast in training; scoring stays fp32)
#   _rowwise   sparse tables (model sparse_embeddings: true) + train.sparse_optimizer: rowwise_adagrad
#   _compile   torch.compile of the model handed to Trainer.fit (not in the default list: slow to build)
DCN_CONFIG = {"name": "single", "network": "dcn", "attention": False, "specific_dim": 0, "stacking": "parallel"}
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], bool]] = {  # name -> (model config, train config, compile)
    "cnan": ({"name": "cnan"}, {}, False),
    "cnan_bf16": ({"name": "cnan"}, {"precision": "bf16"}, False),
    "cnan_rowwise": ({"name": "cnan", "sparse_embeddings": True}, {"sparse_optimizer": "rowwise_adagrad"}, False),
    "cnan_bf16_rowwise": (
        {"name": "cnan", "sparse_embeddings": True},
        {"sparse_optimizer": "rowwise_adagrad", "precision": "bf16"},
        False,
    ),
    "cnan_compile": ({"name": "cnan"}, {}, True),
    "dcn": (DCN_CONFIG, {}, False),
    "dcn_bf16": (DCN_CONFIG, {"precision": "bf16"}, False),
    "dcn_rowwise": ({**DCN_CONFIG, "sparse_embeddings": True}, {"sparse_optimizer": "rowwise_adagrad"}, False),
    # small-data mode (--small): two features, batch 1024
    "small_cnan": ({"name": "cnan"}, {}, False),
    "small_shared_bottom": ({"name": "shared_bottom"}, {}, False),
}
CROSSCTR_MODELS = tuple(VARIANTS)
PEERS = ("deepctr", "rechub", "fuxictr")
MODELS = ("cnan", "cnan_bf16", "cnan_rowwise", "cnan_bf16_rowwise", "dcn", "dcn_bf16", "dcn_rowwise", *PEERS)
LABELS = {
    "cnan": "crossctr CNAN-AT",
    "cnan_bf16": "crossctr CNAN-AT bf16",
    "cnan_rowwise": "crossctr CNAN-AT rowwise",
    "cnan_bf16_rowwise": "crossctr CNAN-AT bf16+rw",
    "cnan_compile": "crossctr CNAN-AT compile",
    "dcn": "crossctr DCN",
    "dcn_bf16": "crossctr DCN bf16",
    "dcn_rowwise": "crossctr DCN rowwise",
    "small_cnan": "crossctr CNAN-AT (small)",
    "small_shared_bottom": "crossctr Shared-Bottom (small)",
    "deepctr": "DeepCTR-Torch DCN",
    "rechub": "torch-rechub DCN",
    "fuxictr": "FuxiCTR DCN",
}
PACKAGES = {
    **{m: "crossctr" for m in CROSSCTR_MODELS},
    "deepctr": "deepctr-torch",
    "rechub": "torch-rechub",
    "fuxictr": "fuxictr",
}
IMPORTS = {"deepctr": "deepctr_torch", "rechub": "torch_rechub", "fuxictr": "fuxictr"}


# ----------------------------------------------------------------------------- data


def vocabularies(scale: float = 1.0) -> list[int]:
    """24 vocabularies log-spaced from 10 to 100,000, times `scale` (sum ~303k ids at scale 1)."""
    base = np.geomspace(VOCAB_MIN, VOCAB_MAX, N_FIELDS)
    return [int(round(v * scale)) for v in base]


def _hash_unit(salt: int | np.ndarray, a: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random value in [-1, 1) per (salt, integer) (splitmix64), no table needed."""
    with np.errstate(over="ignore"):
        z = a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.asarray(salt).astype(np.uint64) * np.uint64(
            0x632BE59BD9B4E019
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 52) - 1.0


def generate(n: int, vocab: list[int], seed: int) -> dict[str, np.ndarray]:
    """n rows: skewed ids per field, a domain per row, and clicks from a planted logistic model.

    Ids: x = floor(V · u³), so low ids are popular and the tail is long (P(x < V/1000) = 0.1).
    logit = -1.2 + Σ_f 0.6·h_f(x_f) + h(x_0, x_1) + h(x_2, x_5) + 0.8·h_d(x_3) + bias_d, where h
    are fixed pseudo-random effects in [-1, 1): first-order effects, two feature crosses, and a
    domain-specific effect (what the private networks of CNAN-AT are for).
    The effects depend only on (field, id), so every scale of the vocabulary plants the same model.
    """
    rng = np.random.default_rng(seed)
    V = np.asarray(vocab, dtype=np.int64)
    x = np.floor(V * rng.random((n, len(vocab))) ** 3).astype(np.int64)  # (n, F)
    d = rng.choice(N_DOMAINS, size=n, p=DOMAIN_SHARE).astype(np.int64)  # (n,)
    logit = np.full(n, -1.2)
    for f in range(len(vocab)):
        logit += 0.6 * _hash_unit(f, x[:, f])
    logit += _hash_unit(101, x[:, 0] * 1_000_003 + x[:, 1]) + _hash_unit(102, x[:, 2] * 1_000_003 + x[:, 5])
    logit += 0.8 * _hash_unit(200 + d, x[:, 3]) + np.array([0.0, 0.3, -0.3])[d]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return {"x": x.astype(np.int32), "d": d, "y": y}


def write_data(folder: Path, n_train: int, n_test: int, vocab: list[int], seed: int) -> None:
    for name, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        for k, v in generate(n, vocab, s).items():
            np.save(folder / f"{name}_{k}.npy", v)
    (folder / "vocab.json").write_text(json.dumps(vocab))


def load_data(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[int]]:
    tr = {k: np.load(folder / f"train_{k}.npy") for k in ("x", "d", "y")}
    te = {k: np.load(folder / f"test_{k}.npy") for k in ("x", "d", "y")}
    return tr, te, json.loads((folder / "vocab.json").read_text())


# ----------------------------------------------------------------------------- model cost


def flops_per_train_row(model: str, n_fields: int = N_FIELDS) -> float:
    """Matrix-multiply FLOPs of one training row (forward + backward = 3 x forward).

    DCN: cross layers 2·2·D, FCN D·512 + 512·256, head; D = 24 · 64.
    CNAN-AT: two networks per row (shared + its domain's private one), each with the attention
    MLP (72·64 + 64·32 + 32 per field) on K = 64 + 8, D = 24 · 72.
    """

    def network(k: int, attention: bool) -> float:
        d = n_fields * k
        macs = d * DEEP[0] + DEEP[0] * DEEP[1] + 2 * CROSS_LAYERS * d
        if attention:
            macs += n_fields * (k * 64 + 64 * 32 + 32)
        return macs

    model = base_model(model)
    if model == "cnan":
        macs = 2 * network(EMB_DIM + 8, True) + 2 * (DEEP[1] + n_fields * (EMB_DIM + 8))
    else:
        macs = network(EMB_DIM, False) + DEEP[1] + n_fields * EMB_DIM
    return 3 * 2 * macs


def base_model(model: str) -> str:
    """cnan, dcn or a peer: the model without its training variant."""
    model = model.removesuffix(BASE)
    for suffix in ("_rowwise", "_compile", "_bf16"):
        model = model.removesuffix(suffix)
    return model


def table_bytes(model: str, total_ids: int) -> float:
    """Rough peak bytes of the embedding tables and their optimizer state (the part that grows)."""
    base = base_model(model)
    if base in ("cnan", "dcn"):  # cnan: shared 64 + 3 domains x 8
        width = EMB_DIM + N_DOMAINS * 8 if base == "cnan" else EMB_DIM
        # row-wise Adagrad: weight + one float per row; the default dense tables: as the peers.
        # Plus Trainer.fit's copy of the best epoch's weights (a deep copy of the state dict).
        state = total_ids * (width + 2) * 4 if model.endswith("_rowwise") else total_ids * width * 4 * 4
        return state + total_ids * width * 4
    return total_ids * EMB_DIM * 4 * 4  # dense Adam: weight, dense grad, 2 moments


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor()
            )
    except OSError:
        return platform.processor()


def cpu_flags(*names: str) -> dict[str, bool]:
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        flags = set()
    return {n: n in flags for n in names}


def mem_available() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    return float("inf")


# ----------------------------------------------------------------------------- runners
# One per library. Each builds its model on the data, trains on rows [start, stop) with the
# library's own loop, and scores the test rows with the library's own predict path.


@dataclass
class RunSpec:
    device: str
    threads: int
    seed: int
    bf16: bool = False
    compile: bool = False
    batch: int = BATCH
    eval_batch: int = EVAL_BATCH
    malloc_tuning: bool = True
    # --against: the `src` folder of another revision, imported by the workers of the `@base` rows
    base_src: str | None = None


BASE = "@base"  # suffix of a crossctr row run from the --against revision's source


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


class CrossctrRunner:
    """crossctr's models on the user's path: `EncodedSplit.from_numpy` + `Trainer.fit`, `inference.score`.

    One `train_rows` call is one `Trainer.fit` with `epochs: 1` over the rows, as `crossctr train`
    runs it: the library's defaults (loss weighting, optimizers, finite checks, validation after
    the epoch, best-weight copy) plus the variant's own settings (`VARIANTS`). The wall time of the
    whole call is what is reported; the trainer's own rows/s (its epoch without validation) is
    kept beside it. Only `progress` is off (a display setting; bars are hidden anyway when
    stderr is not a terminal).
    """

    def __init__(self, name: str, tr: dict, te: dict, vocab: list[int], spec: RunSpec) -> None:
        import torch

        from crossctr.data.dataset import EncodedSplit
        from crossctr.models import build_model, parse_model_config

        self.torch, self.spec, self.name = torch, spec, name
        model_cfg, self.train_cfg, compile_ = VARIANTS[name.removesuffix(BASE)]
        try:
            parsed = parse_model_config(model_cfg)
        except Exception:  # an --against revision from before `single` / `network` (same model)
            model_cfg = {**model_cfg, "name": "tower"} if model_cfg["name"] == "single" else dict(model_cfg)
            if "network" in model_cfg:
                model_cfg["nn"] = model_cfg.pop("network")
            parsed = parse_model_config(model_cfg)
        self.model_config = model_cfg
        self.n_domains = int(max(tr["d"].max(), te["d"].max())) + 1
        self.domains = [f"d{i}" for i in range(self.n_domains)]
        torch.manual_seed(spec.seed)
        self.model = build_model(parsed, vocab, self.n_domains)
        self.net = torch.compile(self.model) if (compile_ or spec.compile) else self.model
        self.train = EncodedSplit.from_numpy(tr["x"], tr["d"], tr["y"])
        self.test = EncodedSplit.from_numpy(te["x"], te["d"], te["y"])
        # Validation after each epoch (part of every fit): the first rows of the test split, 1 %
        # of the training rows (at least 1,000).
        self.valid = EncodedSplit.from_numpy(
            *(a[: max(1000, len(tr["y"]) // 100)] for a in (te["x"], te["d"], te["y"]))
        )
        self.fits = 0
        self.trainer_rows_per_s: list[float] = []

    def config(self) -> Any:
        from crossctr.training.config import TrainConfig

        # threads 0: the library's default (None), chosen by the trainer from the CPUs and the load
        return TrainConfig(
            epochs=1,
            batch_size=self.spec.batch,
            lr=LR,
            device=self.spec.device,
            threads=self.spec.threads or None,
            seed=self.spec.seed + self.fits,
            eval_batch_size=self.spec.eval_batch,
            progress=False,
            **{**self.train_cfg, **({"precision": "bf16"} if self.spec.bf16 else {})},
        )

    def train_rows(self, start: int, stop: int) -> float:
        from crossctr.training.trainer import Trainer

        part = (
            self.train if (start, stop) == (0, len(self.train)) else self.train.select(self.torch.arange(start, stop))
        )
        t0 = time.perf_counter()
        res = Trainer(self.config(), self.domains).fit(self.net, part, self.valid)
        secs = time.perf_counter() - t0
        self.fits += 1  # the next epoch draws another permutation
        self.trainer_rows_per_s.append(res.history[-1]["train_rows_per_s"])
        return secs

    def score(self) -> tuple[float, np.ndarray]:
        try:
            from crossctr.inference import score
        except ImportError:  # an --against revision from before crossctr.inference
            from crossctr.evaluation.predict import score  # type: ignore[no-redef]

        t0 = time.perf_counter()
        s = score(self.net, self.test, self.n_domains, self.spec.eval_batch, self.spec.device)
        return time.perf_counter() - t0, s.prob


class DeepCTRRunner:
    """DeepCTR-Torch's DCN through `model.fit` / `model.predict` (its DataLoader over a TensorDataset)."""

    def __init__(self, name: str, tr: dict, te: dict, vocab: list[int], spec: RunSpec) -> None:
        import torch
        from deepctr_torch.inputs import SparseFeat
        from deepctr_torch.models import DCN

        self.spec = spec
        cols = [SparseFeat(f"f{i}", vocabulary_size=v, embedding_dim=EMB_DIM) for i, v in enumerate(vocab)]
        # No linear part (linear_feature_columns=[]) and no L2 terms: the same plain DCN maths
        # as the others; L2 on the tables would also cost a pass over them every step.
        self.model = DCN(
            [],
            cols,
            cross_num=CROSS_LAYERS,
            dnn_hidden_units=DEEP,
            l2_reg_linear=0,
            l2_reg_embedding=0,
            l2_reg_cross=0,
            l2_reg_dnn=0,
            seed=spec.seed,
            device=spec.device,
        )
        self.model.compile(torch.optim.Adam(self.model.parameters(), lr=LR), "binary_crossentropy")
        self.tr, self.te = tr, te

    def _x(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {f"f{i}": x[:, i] for i in range(x.shape[1])}

    def train_rows(self, start: int, stop: int) -> float:
        x, y = self._x(self.tr["x"][start:stop]), self.tr["y"][start:stop]
        t0 = time.perf_counter()
        self.model.fit(x, y, batch_size=self.spec.batch, epochs=1, verbose=0, shuffle=True)
        return time.perf_counter() - t0

    def score(self) -> tuple[float, np.ndarray]:
        x = self._x(self.te["x"])
        t0 = time.perf_counter()
        p = self.model.predict(x, batch_size=self.spec.eval_batch)
        return time.perf_counter() - t0, np.asarray(p).reshape(-1)


class RechubRunner:
    """torch-rechub's DCN through `CTRTrainer.train_one_epoch` / `CTRTrainer.predict` (its DataGenerator)."""

    def __init__(self, name: str, tr: dict, te: dict, vocab: list[int], spec: RunSpec) -> None:
        import torch
        from torch_rechub.basic.features import SparseFeature
        from torch_rechub.models.ranking import DCN
        from torch_rechub.trainers import CTRTrainer

        self.spec = spec
        torch.manual_seed(spec.seed)
        feats = [SparseFeature(f"f{i}", vocab_size=v, embed_dim=EMB_DIM) for i, v in enumerate(vocab)]
        self.model = DCN(
            feats, n_cross_layers=CROSS_LAYERS, mlp_params={"dims": list(DEEP), "activation": "relu", "dropout": 0}
        )
        self.tmp = tempfile.TemporaryDirectory()
        # weight_decay 0 (the trainer's default is 1e-5): plain Adam like every other model.
        self.trainer = CTRTrainer(
            self.model,
            optimizer_params={"lr": LR, "weight_decay": 0.0},
            n_epoch=1,
            device=spec.device,
            model_path=self.tmp.name,
        )
        self.tr, self.te = tr, te

    def _loader(self, x: np.ndarray, y: np.ndarray, batch: int, shuffle: bool) -> Any:
        from torch.utils.data import DataLoader
        from torch_rechub.utils.data import TorchDataset

        return DataLoader(
            TorchDataset({f"f{i}": x[:, i] for i in range(x.shape[1])}, y), batch_size=batch, shuffle=shuffle
        )

    def train_rows(self, start: int, stop: int) -> float:
        dl = self._loader(self.tr["x"][start:stop], self.tr["y"][start:stop], self.spec.batch, True)
        t0 = time.perf_counter()
        self.trainer.train_one_epoch(dl)
        return time.perf_counter() - t0

    def score(self) -> tuple[float, np.ndarray]:
        dl = self._loader(self.te["x"], self.te["y"], self.spec.eval_batch, False)
        t0 = time.perf_counter()
        p = self.trainer.predict(self.model, dl)
        return time.perf_counter() - t0, np.asarray(p).reshape(-1)


class FuxiRunner:
    """A DCN built from FuxiCTR's layers on its `BaseModel`, trained by `train_epoch`, scored by `predict`.

    Data goes through FuxiCTR's own path: an .npz per split read by its `NpzDataLoader`
    (default settings: one loader worker, row-wise `__getitem__` and collate).
    """

    def __init__(self, name: str, tr: dict, te: dict, vocab: list[int], spec: RunSpec) -> None:
        import torch
        from fuxictr.features import FeatureMap
        from fuxictr.pytorch.layers import CrossNet, FeatureEmbedding, MLP_Block
        from fuxictr.pytorch.models import BaseModel

        self.tmp = tempfile.TemporaryDirectory()
        fmap = FeatureMap("bench", self.tmp.name)
        for i, v in enumerate(vocab):
            fmap.features[f"f{i}"] = {"type": "categorical", "source": "", "vocab_size": v}
        fmap.labels = ["label"]
        fmap.num_fields = fmap.get_num_fields()
        fmap.default_emb_dim = EMB_DIM
        fmap.set_column_index()

        class DCN(BaseModel):  # FuxiCTR's DCN recipe (model zoo layout), from the package's layers
            def __init__(self, feature_map: Any, **kwargs: Any) -> None:
                super().__init__(feature_map, model_id="DCN", **kwargs)
                self.embedding_layer = FeatureEmbedding(feature_map, EMB_DIM)
                d = feature_map.sum_emb_out_dim()
                self.dnn = MLP_Block(
                    input_dim=d,
                    output_dim=None,
                    hidden_units=list(DEEP),
                    hidden_activations="ReLU",
                    output_activation=None,
                    dropout_rates=0,
                    batch_norm=False,
                )
                self.crossnet = CrossNet(d, CROSS_LAYERS)
                self.fc = torch.nn.Linear(d + DEEP[-1], 1)
                self.compile("adam", "binary_crossentropy", LR)
                self.reset_parameters()
                self.model_to_device()

            def forward(self, inputs: dict) -> dict:
                X = self.get_inputs(inputs)
                e = self.embedding_layer(X, flatten_emb=True)
                out = torch.cat([self.crossnet(e), self.dnn(e)], dim=-1)
                return {"y_pred": self.output_activation(self.fc(out))}

        torch.manual_seed(spec.seed)
        gpu = torch.device(spec.device).index or 0 if spec.device.startswith("cuda") else -1
        self.model = DCN(fmap, gpu=gpu, verbose=0, model_root=self.tmp.name, metrics=["AUC"])
        # What `fit` sets up before its epochs; evaluation every epoch is switched off.
        self.model._eval_steps, self.model._total_steps, self.model._max_gradient_norm = 1 << 62, 0, 10.0
        self.model._stop_training = False
        self.fmap, self.tr, self.te, self.spec = fmap, tr, te, spec
        self.loaders: dict[tuple[int, int], Any] = {}  # built once per row range, as `fit` would
        self.test_loader = self._loader("test", te["x"], te["y"], spec.eval_batch, False)

    def _loader(self, name: str, x: np.ndarray, y: np.ndarray, batch: int, shuffle: bool) -> Any:
        from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader

        path = os.path.join(self.tmp.name, f"{name}.npz")
        np.savez(path, label=y, **{f"f{i}": x[:, i] for i in range(x.shape[1])})
        return NpzDataLoader(self.fmap, path, batch_size=batch, shuffle=shuffle)

    def train_rows(self, start: int, stop: int) -> float:
        if (start, stop) not in self.loaders:
            self.loaders[start, stop] = self._loader(
                f"train_{start}_{stop}", self.tr["x"][start:stop], self.tr["y"][start:stop], self.spec.batch, True
            )
        t0 = time.perf_counter()
        self.model.train_epoch(self.loaders[start, stop])
        return time.perf_counter() - t0

    def score(self) -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        p = self.model.predict(self.test_loader)
        return time.perf_counter() - t0, np.asarray(p).reshape(-1)


RUNNERS: dict[str, Callable[..., Any]] = {
    **{m: CrossctrRunner for m in CROSSCTR_MODELS},
    **{m + BASE: CrossctrRunner for m in CROSSCTR_MODELS},
    "deepctr": DeepCTRRunner,
    "rechub": RechubRunner,
    "fuxictr": FuxiRunner,
}


# ----------------------------------------------------------------------------- worker process


def tune_malloc() -> bool:
    """Keep freed memory in the process instead of handing each large block back to the kernel.

    glibc serves blocks over 32 MB (and, after trimming, smaller ones) with fresh mmap'd pages,
    so every large activation tensor costs page faults on first touch: at batch 8192 that made
    scoring 1.8x slower here. Set in every worker alike (peers included), like the thread count;
    `--no-malloc-tuning` turns it off. Same effect as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge>.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters from <malloc.h>
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc
        return False


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(name: str, folder: str, spec_d: dict, conn: Any) -> None:
    """Builds one model and answers commands from the parent until told to stop."""
    os.environ["TQDM_DISABLE"] = "1"  # the peers' progress bars
    quiet = io.StringIO()
    try:
        import torch

        spec = RunSpec(**spec_d)
        if name.endswith(BASE):  # the --against revision's crossctr, ahead of the installed one
            sys.path.insert(0, str(spec.base_src))
        malloc_tuned = tune_malloc() if spec.malloc_tuning else False
        if spec.threads:  # 0: the library's default (crossctr's trainer picks it)
            torch.set_num_threads(spec.threads)
        tr, te, vocab = load_data(Path(folder))
        with contextlib.redirect_stdout(quiet):  # the peers print from their loops
            runner = RUNNERS[name](name, tr, te, vocab, spec)
        crossctr_file = sys.modules["crossctr"].__file__ if "crossctr" in sys.modules else None
        conn.send(
            (
                "ready",
                {
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "malloc_tuned": malloc_tuned,
                    "crossctr": crossctr_file,
                },
            )
        )
        while True:
            cmd, arg = conn.recv()
            if cmd == "stop":
                conn.send(("done", {"peak_rss_mb": _peak_rss_mb()}))
                return
            with contextlib.redirect_stdout(quiet):
                if cmd == "train":
                    secs = runner.train_rows(*arg)
                    _sync(spec.device)
                    own = getattr(runner, "trainer_rows_per_s", None)
                    conn.send(
                        (
                            "ok",
                            {
                                "seconds": secs,
                                "threads": torch.get_num_threads(),
                                "trainer_rows_per_s": own[-1] if own else None,
                            },
                        )
                    )
                elif cmd == "score":
                    secs, p = runner.score()
                    conn.send(("ok", {"seconds": secs, "auc": _auc(te["y"], p)}))
            quiet.seek(0), quiet.truncate()
    except Exception:
        conn.send(("error", traceback.format_exc(limit=6)))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class Worker:
    def __init__(self, ctx: Any, name: str, folder: Path, spec: RunSpec) -> None:
        self.name = name
        self.conn, child = ctx.Pipe()
        # Not a daemon: FuxiCTR's loader starts a worker process of its own. A worker whose parent
        # is gone sees EOF on the pipe and exits.
        self.proc = ctx.Process(target=worker, args=(name, str(folder), asdict(spec), child))
        self.proc.start()
        child.close()
        self.info = self._recv()

    def _recv(self) -> dict:
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            raise RuntimeError(
                f"{LABELS[self.name]} worker died (exit code {self.proc.exitcode}; out of memory?)"
            ) from None
        if kind == "error":
            raise RuntimeError(f"{LABELS[self.name]} worker failed:\n{payload}")
        return payload

    def call(self, cmd: str, arg: Any = None) -> dict:
        self.conn.send((cmd, arg))
        return self._recv()

    def stop(self) -> float:
        peak = self.call("stop")["peak_rss_mb"]
        self.proc.join(timeout=30)
        return peak

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=10)


# ----------------------------------------------------------------------------- orchestration


@dataclass
class Row:
    model: str
    label: str
    package: str
    version: str
    train_rows_per_s: float = float("nan")
    predict_rows_per_s: float = float("nan")
    peak_rss_mb: float = float("nan")
    test_auc: float = float("nan")  # after the first epoch
    train_rows_per_s_reps: list[float] = field(default_factory=list)
    predict_rows_per_s_reps: list[float] = field(default_factory=list)
    auc_by_epoch: list[float] = field(default_factory=list)
    train_gflops: float = float("nan")  # achieved matmul FLOP rate while training
    # crossctr only: rows/s the trainer itself reports for the epoch (without validation)
    trainer_rows_per_s_reps: list[float] = field(default_factory=list)


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def available_models(wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    """The wanted models whose library imports here, and why the others are left out."""
    import importlib

    ok, missing = [], {}
    for m in wanted:
        if m in CROSSCTR_MODELS:
            ok.append(m)
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                importlib.import_module(IMPORTS[m])
            ok.append(m)
        except Exception as e:  # an import error of any kind leaves that peer out, with the reason
            missing[m] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return ok, missing


def calibrate_matmul(threads: int, device: str) -> float:
    """GFLOP/s of `torch.mm` in fp32 on the FCN's big product (4096 x 1728 @ 1728 x 512) right now.

    A gauge of how much of the machine the run had (it moves with the other jobs), and on a GPU
    the fp32 matmul ceiling for this model's shapes.
    """
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(BATCH, N_FIELDS * (EMB_DIM + 8), device=device)
    b = torch.randn(N_FIELDS * (EMB_DIM + 8), DEEP[0], device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    n, t0 = 10, time.perf_counter()
    for _ in range(n):
        a @ b
    _sync(device)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] * n / (time.perf_counter() - t0) / 1e9


def compare(
    models: list[str], folder: Path, spec: RunSpec, n_train: int, n_test: int, reps: int, log: Callable[[str], None]
) -> tuple[list[Row], list[float]]:
    """Main table: persistent workers, interleaved repetitions, medians."""
    ctx = mp.get_context("spawn")
    workers: dict[str, Worker] = {}
    rows = {m: Row(m, LABELS[m], PACKAGES[m], package_version(PACKAGES[m]) or "?") for m in models}
    try:
        return _compare(models, workers, rows, ctx, folder, spec, n_train, n_test, reps, log)
    finally:
        for w in workers.values():
            w.kill()


def _compare(
    models: list[str],
    workers: dict,
    rows: dict,
    ctx: Any,
    folder: Path,
    spec: RunSpec,
    n_train: int,
    n_test: int,
    reps: int,
    log: Callable[[str], None],
) -> tuple[list[Row], list[float]]:
    for m in models:
        workers[m] = Worker(ctx, m, folder, spec)
        warm = min(2 * spec.batch, n_train)  # first-step allocations and kernel choice, untimed
        workers[m].call("train", (0, warm))
        where = workers[m].info.get("crossctr")
        log(f"  ready: {LABELS[m]}" + (f" (crossctr from {Path(where).parents[2].name}/src)" if where else ""))
    calib = []
    for r in range(reps):
        calib.append(calibrate_matmul(spec.threads, spec.device))
        order = models[r % len(models) :] + models[: r % len(models)]  # rotate who goes first
        for m in order:
            tr = workers[m].call("train", (0, n_train))
            t = tr["seconds"]
            s = workers[m].call("score")
            rows[m].train_rows_per_s_reps.append(n_train / t)
            if tr.get("trainer_rows_per_s"):
                rows[m].trainer_rows_per_s_reps.append(tr["trainer_rows_per_s"])
            rows[m].predict_rows_per_s_reps.append(n_test / s["seconds"])
            rows[m].auc_by_epoch.append(s["auc"])
            log(
                f"  rep {r + 1}/{reps} {LABELS[m]:<24} train {n_train / t:>9,.0f} rows/s  score "
                f"{n_test / s['seconds']:>9,.0f} rows/s  AUC {s['auc']:.4f}"
            )
    for m in models:
        row = rows[m]
        row.peak_rss_mb = workers[m].stop()
        row.train_rows_per_s = statistics.median(row.train_rows_per_s_reps)
        row.predict_rows_per_s = statistics.median(row.predict_rows_per_s_reps)
        row.test_auc = row.auc_by_epoch[0]
        row.train_gflops = (
            float("nan") if m.startswith("small_") else row.train_rows_per_s * flops_per_train_row(m) / 1e9
        )
    return [rows[m] for m in models], calib


def scaling(
    models: list[str],
    root: Path,
    spec: RunSpec,
    scales: list[float],
    n_rows: int,
    reps: int,
    seed: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Training rows/s as the vocabulary grows (same rows, same batch); one worker alive at a time.

    A point runs only when its tables and optimizer state fit in the memory available now;
    otherwise it is recorded as skipped with the estimate.
    """
    ctx = mp.get_context("spawn")
    out: dict[str, Any] = {"scales": scales, "rows": n_rows, "reps": reps, "train_rows_per_s": {}, "skipped": {}}
    warm = 2 * spec.batch
    folders = {}
    for s in scales:
        folders[s] = root / f"scale_{s:g}"
        folders[s].mkdir()
        write_data(folders[s], warm + n_rows, 1000, vocabularies(s), seed)
    res: dict[str, dict[str, list[float]]] = {m: {f"{s:g}": [] for s in scales} for m in models}
    for r in range(reps):
        for m in models:
            for s in scales:
                need = table_bytes(m, sum(vocabularies(s))) + 1.5e9
                if need > 0.85 * mem_available():
                    out["skipped"].setdefault(m, {})[f"{s:g}"] = (
                        f"needs ~{need / 1e9:.1f} GB, {mem_available() / 1e9:.1f} GB available"
                    )
                    continue
                w = Worker(ctx, m, folders[s], spec)
                try:
                    w.call("train", (0, warm))
                    t = w.call("train", (warm, warm + n_rows))["seconds"]
                    w.stop()
                finally:
                    w.kill()
                res[m][f"{s:g}"].append(n_rows / t)
                log(f"  scale {s:>5g}x rep {r + 1}/{reps} {LABELS[m]:<24} train {n_rows / t:>9,.0f} rows/s")
    for m in models:
        out["train_rows_per_s"][m] = {k: (statistics.median(v) if v else None) for k, v in res[m].items()}
    return out


def slowdown(sc: dict[str, Any], model: str, scale: float) -> float | None:
    pts = sc["train_rows_per_s"].get(model, {})
    base, big = pts.get("1"), pts.get(f"{scale:g}")
    if not base or not big:
        return None
    return 1.0 - big / base


def plot_scaling(sc: dict[str, Any], path: Path, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    top = 1.15
    for m, pts in sc["train_rows_per_s"].items():
        xs = [s for s in sc["scales"] if pts.get(f"{s:g}")]
        if not xs:
            continue
        ys = [pts[f"{s:g}"] for s in xs]
        style = "-o" if m in CROSSCTR_MODELS else "--s"
        axes[0].plot(xs, ys, style, label=LABELS[m])
        axes[1].plot(xs, [y / ys[0] for y in ys], style, label=LABELS[m])
        top = max(top, max(y / ys[0] for y in ys) + 0.05)
    for s in sc["scales"]:  # say why a scale has no points
        why = [v[f"{s:g}"] for v in sc["skipped"].values() if f"{s:g}" in v]
        if why and not any(pts.get(f"{s:g}") for pts in sc["train_rows_per_s"].values()):
            need = sorted(float(w.split("~")[1].split(" ")[0]) for w in why)
            axes[1].annotate(
                f"{s:g}x: no model fits\n(needs {need[0]:.0f}-{need[-1]:.0f} GB)",
                (s, 0.5),
                ha="right",
                fontsize=8,
                color="0.3",
            )
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(sc["scales"], [f"{s:g}x" for s in sc["scales"]])
        ax.set_xlabel(f"vocabulary scale (1x = {sum(vocabularies(1)):,} ids over {N_FIELDS} fields)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training rows/s")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("rows/s relative to 1x")
    axes[1].set_ylim(0, top)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Training speed as the vocabulary grows ({sc['rows']:,} "
        f"rows per point, batch {BATCH}, medians of {sc['reps']})",
        fontsize=10,
    )
    fig.text(0.01, 0.01, note, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(rows: list[Row], log: Callable[[str], None]) -> None:
    head = (
        f"{'model':<24} {'version':<9} {'train rows/s':>13} {'score rows/s':>13} "
        f"{'peak RSS MB':>12} {'test AUC':>9} {'train GFLOP/s':>14}"
    )
    log(head)
    log("-" * len(head))
    for r in rows:
        log(
            f"{r.label:<24} {r.version:<9} {r.train_rows_per_s:>13,.0f} {r.predict_rows_per_s:>13,.0f} "
            f"{r.peak_rss_mb:>12,.0f} {r.test_auc:>9.4f} {r.train_gflops:>14.1f}"
        )


def ratios(
    rows: list[Row], sc: dict[str, Any] | None, contention: dict[str, Any] | None = None
) -> dict[str, float | None]:
    """The issue's ratios: crossctr's rows against the fastest peer's DCN (train, score) and lowest peer RSS."""
    by = {r.model: r for r in rows}
    peers = [r for r in rows if r.model not in CROSSCTR_MODELS]
    best_train = max((r.train_rows_per_s for r in peers), default=None)
    best_pred = max((r.predict_rows_per_s for r in peers), default=None)
    low_rss = min((r.peak_rss_mb for r in peers), default=None)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else round(a / b, 3)

    def get(m: str, k: str) -> Any:
        return getattr(by[m], k) if m in by else None

    def auc_diff(a: str, b: str) -> float | None:
        return None if a not in by or b not in by else round(by[a].test_auc - by[b].test_auc, 4)

    out: dict[str, float | None] = {
        # the library defaults (fp32, dense tables) against the fastest peer's DCN
        "cnan_train_vs_best_peer_dcn": ratio(get("cnan", "train_rows_per_s"), best_train),
        "cnan_bf16_train_vs_best_peer_dcn": ratio(get("cnan_bf16", "train_rows_per_s"), best_train),
        "cnan_predict_vs_best_peer_dcn": ratio(get("cnan", "predict_rows_per_s"), best_pred),
        "dcn_train_vs_best_peer_dcn": ratio(get("dcn", "train_rows_per_s"), best_train),
        # like for like: crossctr's DCN scoring against the fastest peer's DCN scoring
        "predict_vs_best_peer": ratio(get("dcn", "predict_rows_per_s"), best_pred),
        "cnan_rss_vs_lowest_peer": ratio(get("cnan", "peak_rss_mb"), low_rss),
        "dcn_rss_vs_lowest_peer": ratio(get("dcn", "peak_rss_mb"), low_rss),
        "contention_2jobs_slowdown": None if not contention else contention.get("slowdown"),
        # fractional drop of crossctr CNAN-AT's training rows/s at 100x the vocabulary (its
        # row-wise variant: the dense default's tables and Adam moments do not fit at 100x)
        "vocab100x_slowdown": None,
        # the faster options, each against the fastest peer's DCN or its default
        **{
            f"{m}_train_vs_best_peer_dcn": ratio(get(m, "train_rows_per_s"), best_train)
            for m in ("cnan_rowwise", "cnan_bf16_rowwise", "cnan_compile", "dcn_bf16", "dcn_rowwise")
        },
        **{
            f"{m}_predict_vs_best_peer_dcn": ratio(get(m, "predict_rows_per_s"), best_pred)
            for m in ("cnan_bf16", "cnan_rowwise", "cnan_bf16_rowwise")
        },
        **{
            f"{m}_rss_vs_lowest_peer": ratio(get(m, "peak_rss_mb"), low_rss)
            for m in ("cnan_bf16", "cnan_rowwise", "cnan_bf16_rowwise", "dcn_rowwise")
        },
        "cnan_bf16_auc_minus_fp32": auc_diff("cnan_bf16", "cnan"),
        "cnan_rowwise_auc_minus_default": auc_diff("cnan_rowwise", "cnan"),
        "dcn_rowwise_auc_minus_default": auc_diff("dcn_rowwise", "dcn"),
        "dcn_vocab100x_slowdown": None,
        "cnan_vocab10x_slowdown": None,
        "dcn_vocab10x_slowdown": None,
    }
    if sc:
        for m, key in (("cnan_rowwise", "cnan"), ("dcn_rowwise", "dcn"), ("cnan", "cnan"), ("dcn", "dcn")):
            for s in (10, 100):
                v = slowdown(sc, m, s)
                k = "vocab100x_slowdown" if (key, s) == ("cnan", 100) else f"{key}_vocab{s}x_slowdown"
                if v is not None and out.get(k) is None:  # the row-wise variant first, the default if it alone ran
                    out[k] = round(v, 3)
    return out


def contention(
    model: str, folder: Path, spec: RunSpec, n_rows: int, reps: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Two identical jobs at once against one alone: the slowdown of a job when two share the cores.

    Both jobs run `model` through `Trainer.fit` with the library's thread default (`threads: None`)
    and the process settings of `crossctr train` (OMP_WAIT_POLICY=PASSIVE unless set otherwise).
    Alone: job A trains `n_rows`, B idles. Together: A and B train `n_rows` each, started at once.
    slowdown = median over reps of (mean seconds of A and B together) / (seconds of A alone); two jobs
    sharing the cores fairly take at most 2x.
    """
    ctx = mp.get_context("spawn")
    job_spec = RunSpec(**{**asdict(spec), "threads": 0})
    jobs = [Worker(ctx, model, folder, job_spec) for _ in range(2)]
    try:
        for w in jobs:
            w.call("train", (0, min(2 * spec.batch, n_rows)))  # warm-up, untimed
        alone, together, threads = [], [], []
        for r in range(reps):
            a = jobs[0].call("train", (0, n_rows))
            alone.append(a["seconds"])
            threads.append(a["threads"])
            for w in jobs:  # both at once
                w.conn.send(("train", (0, n_rows)))
            both = [w._recv() for w in jobs]
            together.append(statistics.mean(b["seconds"] for b in both))
            log(
                f"  contention rep {r + 1}/{reps}: one job {alone[-1]:.1f} s, two jobs {together[-1]:.1f} s each "
                f"({together[-1] / alone[-1]:.2f}x), {a['threads']} threads"
            )
        for w in jobs:
            w.stop()
    finally:
        for w in jobs:
            w.kill()
    ratios_ = [t / a for t, a in zip(together, alone, strict=False)]
    return {
        "model": model,
        "rows": n_rows,
        "reps": reps,
        "alone_seconds": alone,
        "together_seconds": together,
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "slowdown": round(statistics.median(ratios_), 3),
    }


def generate_small(n: int, seed: int) -> dict[str, np.ndarray]:
    """Two categorical features, two domains (80 / 20 %): the shape of a small two-platform dataset."""
    rng = np.random.default_rng(seed)
    vocab = SMALL_VOCAB
    x = np.stack([np.floor(v * rng.random(n) ** 2) for v in vocab], axis=1).astype(np.int64)  # (n, 2)
    d = rng.choice(2, size=n, p=(0.8, 0.2)).astype(np.int64)
    logit = -1.0 + _hash_unit(0, x[:, 0]) + 0.7 * _hash_unit(1, x[:, 1]) + 0.6 * _hash_unit(300 + d, x[:, 1])
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return {"x": x.astype(np.int32), "d": d, "y": y}


def small_data(folder: Path, n_train: int, n_test: int, seed: int) -> None:
    for name, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        for k, v in generate_small(n, s).items():
            np.save(folder / f"{name}_{k}.npy", v)
    (folder / "vocab.json").write_text(json.dumps(SMALL_VOCAB))


def lean_fit(model: Any, train: Any, cfg: Any, domains: list[str], steps: int | None = None) -> list[float]:
    """The least a training epoch needs, for `--profile` and the trainer's tests: the trainer's loss
    (`Trainer._loss`) and optimizers (`make_optimizers`), its batch order, and nothing else (no
    finite checks, no per-step loss read-back, no validation). Returns the per-step click losses."""
    import torch

    from crossctr.data.dataset import Batch
    from crossctr.training.optim import optimizer_step
    from crossctr.training.trainer import Trainer, make_optimizers

    trainer = Trainer(cfg, domains)
    opts = make_optimizers(model, cfg)
    model.train()
    torch.manual_seed(cfg.seed)  # as `fit` seeds the global RNG (dropout)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
    x, d, y = train.features[order], train.domain[order], train.label[order]  # one gather per epoch
    losses = []
    for i, s in enumerate(range(0, len(train), cfg.batch_size)):
        if steps is not None and i >= steps:
            break
        b = Batch(x[s : s + cfg.batch_size], d[s : s + cfg.batch_size], y[s : s + cfg.batch_size])
        loss, terms = trainer._loss(model, b)
        optimizer_step(loss, opts)
        losses.append(terms["click"])
    return [float(v) for v in losses]


def profile(model: str, rows: int, spec: RunSpec, seed: int, top: int = 15) -> dict[str, Any]:
    """Where a training step's time goes: `Trainer.fit` against `lean_fit` on the same model and rows.

    One thread. CPU seconds (`time.process_time`, which other jobs on the machine do not inflate)
    per step of each, then torch.profiler's top ops by self CPU time for each, with their share
    of the step.
    """
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    torch.set_num_threads(1)
    spec = RunSpec(**{**asdict(spec), "threads": 1})
    small = model.startswith("small_")
    vocab = SMALL_VOCAB if small else vocabularies(1)
    gen = generate_small if small else (lambda n, s: generate(n, vocab, s))
    tr, te = gen(rows, seed), gen(1000, seed + 1)
    out: dict[str, Any] = {"model": model, "rows": rows, "batch": spec.batch}
    for kind in ("Trainer.fit", "lean loop"):
        runner = CrossctrRunner(model, tr, te, vocab, spec)
        cfg = runner.config()
        warm = runner.train.select(torch.arange(min(2 * spec.batch, rows)))
        if kind == "Trainer.fit":
            runner.train_rows(0, min(2 * spec.batch, rows))
            run = functools.partial(runner.train_rows, 0, rows)
        else:
            lean_fit(runner.net, warm, cfg, runner.domains)
            run = functools.partial(lean_fit, runner.net, runner.train, cfg, runner.domains)
        steps = math.ceil(rows / spec.batch)
        c0 = time.process_time()
        run()
        cpu_ms = (time.process_time() - c0) * 1000 / steps
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ops) or 1.0
        table = [
            {
                "op": e.key,
                "ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 2),
                "share": round(e.self_cpu_time_total / total, 4),
                "calls_per_step": round(e.count / steps, 1),
            }
            for e in ops[:top]
        ]
        out[kind] = {"cpu_ms_per_step": round(cpu_ms, 1), "top_ops": table}
        print(f"{LABELS[model]} under {kind}: {cpu_ms:.1f} CPU ms per step of {spec.batch} rows (one thread)")
        for t in table:
            print(
                f"  {t['op'][:48]:<48} {t['ms_per_step']:>9.2f} ms/step {100 * t['share']:>6.1f} %  "
                f"{t['calls_per_step']:>7.1f} calls/step"
            )
    return out


def checkout_src(rev: str, dest: Path) -> str:
    """The `src` folder of git revision `rev` of this repository, written under `dest`; its full commit id."""
    import subprocess

    repo = HERE.parent
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", rev + "^{commit}"], capture_output=True, text=True
    )
    if commit.returncode != 0:
        raise SystemExit(f"--against {rev}: not a commit of {repo.name}: {commit.stderr.strip()}")
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return commit.stdout.strip()


def before_after(rows: list[Row], base_rows: list[Row]) -> dict[str, Any]:
    """Each ratio from the --against revision's rows and from this tree's, and their quotient.

    The peers' rows are shared, so a ratio moves only with crossctr's own speed. Noise: the
    quotient of each interleaved repetition (rep r after / rep r before) over the repetitions.
    """
    peers = [r for r in rows if r.model not in CROSSCTR_MODELS]
    renamed = [
        Row(**{**asdict(r), "model": r.model.removesuffix(BASE), "label": r.label.split(" @")[0]}) for r in base_rows
    ]
    after = ratios(rows, None)
    before = ratios(renamed + peers, None)
    ratio_rows = {}
    for k, a in after.items():
        b = before.get(k)
        if (k.endswith("_vs_best_peer_dcn") or k == "predict_vs_best_peer") and a and b:
            ratio_rows[k] = {"before": b, "after": a, "after_over_before": round(a / b, 3)}
    by_after = {r.model: r for r in rows}
    per_rep: dict[str, Any] = {}
    for b in renamed:
        a = by_after.get(b.model)
        if a is None:
            continue
        for what in ("train", "predict"):
            qs = [
                x / y
                for x, y in zip(
                    getattr(a, f"{what}_rows_per_s_reps"), getattr(b, f"{what}_rows_per_s_reps"), strict=False
                )
            ]
            per_rep[f"{b.model}_{what}"] = {
                "after_over_before_median": round(statistics.median(qs), 3),
                "after_over_before_reps": [round(q, 3) for q in qs],
                "before_rows_per_s": round(getattr(b, f"{what}_rows_per_s")),
                "after_rows_per_s": round(getattr(a, f"{what}_rows_per_s")),
            }
    return {"ratios": ratio_rows, "rows_per_s": per_rep}


def against_table(against: dict[str, Any]) -> list[str]:
    out = [f"  {'ratio':<34} {'before':>8} {'after':>8} {'after/before':>13}"]
    for k, v in against["ratios"].items():
        out.append(f"  {k:<34} {v['before']:>8.3f} {v['after']:>8.3f} {v['after_over_before']:>13.3f}")
    out.append(f"  {'rows/s':<34} {'before':>8} {'after':>8} {'after/before, each rep (median)':>13}")
    for k, v in against["rows_per_s"].items():
        reps = ", ".join(f"{q:.3f}" for q in v["after_over_before_reps"])
        out.append(
            f"  {k:<34} {v['before_rows_per_s']:>8,} {v['after_rows_per_s']:>8,}   {reps} "
            f"({v['after_over_before_median']:.3f})"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=400_000, help="training rows (test rows = rows / 4); default 400000")
    p.add_argument(
        "--vocab-scale", type=float, default=1.0, help="multiply every vocabulary for the main table; default 1"
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch intra-op threads in every worker; default 2 (the issue's shape); 0: each library's default",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20000 rows, 1 repetition, scaling at 1x and 10x on 8192 rows, small data 20000 rows",
    )
    p.add_argument(
        "--parts",
        default="main,small,contention,scaling",
        help="what to run: main (the table), small (two features, 133k "
        "rows, batch 1024), contention (2 jobs at once), scaling",
    )
    p.add_argument("--small", action="store_true", help="only the small-data part (--parts small)")
    p.add_argument("--contention", action="store_true", help="only the 2-jobs part (--parts contention)")
    p.add_argument(
        "--contention-rows", type=int, default=32_768, help="training rows per contention job; default 32768"
    )
    p.add_argument("--contention-model", default="cnan", choices=CROSSCTR_MODELS)
    p.add_argument(
        "--reps", type=int, default=3, help="interleaved repetitions (epochs) per model; medians are reported"
    )
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--batch-size", type=int, default=BATCH)
    p.add_argument("--scaling-scales", default="1,10,100", help="vocabulary scales of the figure; empty to skip it")
    p.add_argument("--scaling-rows", type=int, default=81_920, help="timed training rows per scaling point")
    p.add_argument("--scaling-reps", type=int, default=2)
    p.add_argument(
        "--with-emulated-bf16",
        action="store_true",
        help="run the bf16 rows on a CPU without bf16 matmul instructions (slow)",
    )
    p.add_argument(
        "--bf16", action="store_true", help="train every crossctr row with precision: bf16 (peers stay fp32)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile crossctr's models")
    p.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc's malloc settings alone in the workers")
    p.add_argument(
        "--omp-wait-policy",
        choices=["passive", "active", "default"],
        default="passive",
        help="OMP_WAIT_POLICY for every worker; passive (default): threads waiting at a barrier sleep "
        "instead of spinning, which on a machine shared with other jobs was 4-6x faster at 2 threads",
    )
    p.add_argument(
        "--against",
        metavar="REV",
        help="also run every crossctr row from the source of git revision REV (rows named <model>@base), "
        "interleaved with the rest, and print each ratio before (REV) and after (this tree) side by side",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results.json"), help="results JSON ('' to skip)")
    p.add_argument("--figure", default=str(HERE / "scaling.png"), help="scaling figure PNG ('' to skip)")
    p.add_argument(
        "--profile",
        choices=CROSSCTR_MODELS,
        help="only profile a crossctr model: Trainer.fit against a lean loop, one thread; then exit",
    )
    args = p.parse_args(argv)

    if args.omp_wait_policy != "default":  # before torch starts its OpenMP runtime here or in a worker
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    parts = (
        {"small"}
        if args.small
        else {"contention"}
        if args.contention
        else {x.strip() for x in args.parts.split(",") if x.strip()}
    )
    small_rows = SMALL_ROWS
    if args.quick:
        args.rows, args.reps, args.scaling_rows, args.scaling_reps = 20_000, 1, 8192, 1
        args.scaling_scales = "1,10" if args.scaling_scales == "1,10,100" else args.scaling_scales
        args.contention_rows, small_rows = min(args.contention_rows, 8192), 20_000
    if "scaling" not in parts:
        args.scaling_scales = ""
    spec = RunSpec(
        args.device,
        args.threads,
        args.seed,
        args.bf16,
        args.compile,
        args.batch_size,
        EVAL_BATCH,
        not args.no_malloc_tuning,
    )
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"--device {args.device}: no CUDA device is available; use --device cpu", file=sys.stderr)
            return 2
    if args.profile:
        small = args.profile.startswith("small_")
        batch = SMALL_BATCH if small and args.batch_size == BATCH else args.batch_size
        res = profile(args.profile, min(args.rows, 20 * batch), RunSpec(**{**asdict(spec), "batch": batch}), args.seed)
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        return 0
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(MODELS))
    if unknown:
        print(f"--models: unknown {unknown}; choose from {list(MODELS)}", file=sys.stderr)
        return 2
    models, missing = available_models(wanted)
    if args.device == "cpu" and not any(cpu_flags("avx512_bf16", "amx_bf16").values()) and not args.with_emulated_bf16:
        # emulated bf16 matmuls ran ~8x slower than fp32 on such a CPU: hours, and no answer to
        # what bf16 gives where it exists
        for m in [m for m in models if "_bf16" in m]:
            models.remove(m)
            missing[m] = (
                "this CPU has no bf16 matmul instructions (avx512_bf16 / amx_bf16); --with-emulated-bf16 runs it anyway"
            )
    n_train, n_test = args.rows, max(args.rows // 4, 1000)
    lines: list[str] = []
    against_dir = tempfile.TemporaryDirectory(prefix="crossctr-against-") if args.against else None
    against: dict[str, Any] | None = None
    if against_dir is not None:
        against = {"rev": args.against, "commit": checkout_src(args.against, Path(against_dir.name))}
        spec.base_src = str(Path(against_dir.name) / "src")
        for m in [m for m in models if m in CROSSCTR_MODELS]:
            LABELS[m + BASE] = f"{LABELS[m]} @{against['commit'][:7]}"
            PACKAGES[m + BASE] = "crossctr"
            models.append(m + BASE)

    def log(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    t_start = time.time()
    load0 = os.getloadavg()
    log(
        f"crossctr speed benchmark: {n_train:,} train / {n_test:,} test rows, {N_FIELDS} fields (vocab "
        f"{VOCAB_MIN}..{VOCAB_MAX:,} x {args.vocab_scale:g}), "
        f"emb {EMB_DIM}, cross {CROSS_LAYERS} + FCN {'x'.join(map(str, DEEP))}, batch {args.batch_size}, Adam "
        f"{LR:g}, device {args.device}, {args.threads} threads"
    )
    log(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load0[0]:.1f} at start "
        "(shared with other jobs: models run interleaved, medians reported)"
    )
    log(
        f"cpu: {cpu_model()}, bf16 in hardware: {cpu_flags('avx512_bf16', 'amx_bf16')} "
        "(without, the bf16 rows are emulated and slow)"
    )
    log(
        f"every worker: {args.threads} torch threads, OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"malloc tuning {'off' if args.no_malloc_tuning else 'on (no mmap per large tensor)'}"
    )
    for m, why in missing.items():
        log(f"  left out: {LABELS[m]} ({why if m in CROSSCTR_MODELS else f'{PACKAGES[m]} not importable: {why}'})")
    with tempfile.TemporaryDirectory(prefix="crossctr-bench-") as tmp:
        root = Path(tmp)
        main_dir = root / "main"
        main_dir.mkdir()
        write_data(main_dir, n_train, n_test, vocabularies(args.vocab_scale), args.seed)
        rows, calib = (
            compare(models, main_dir, spec, n_train, n_test, args.reps, log) if "main" in parts and models else ([], [])
        )
        small_rows_out: list[Row] = []
        if "small" in parts:
            small_dir = root / "small"
            small_dir.mkdir()
            small_data(small_dir, small_rows, max(small_rows // 4, 1000), args.seed)
            log(f"small data: 2 features, 2 domains, {small_rows:,} train rows, batch {SMALL_BATCH}:")
            small_spec = RunSpec(**{**asdict(spec), "batch": SMALL_BATCH})
            small_rows_out, _ = compare(
                ["small_cnan", "small_shared_bottom"],
                small_dir,
                small_spec,
                small_rows,
                max(small_rows // 4, 1000),
                args.reps,
                log,
            )
        cont = None
        if "contention" in parts:
            log(
                f"contention: {LABELS[args.contention_model]}, {args.contention_rows:,} "
                "rows per job, one job alone against two at once "
                f"(each with the library's thread default) on {len(os.sched_getaffinity(0))} CPUs:"
            )
            cont = contention(
                args.contention_model, main_dir, spec, args.contention_rows, max(1, min(args.reps, 2)), log
            )
        scales = [float(s) for s in args.scaling_scales.split(",") if s.strip()]
        sc = None
        if scales:
            log(
                f"vocabulary scaling ({', '.join(f'{s:g}x' for s in scales)}), "
                f"{args.scaling_rows:,} timed rows per point:"
            )
            sc = scaling(
                [m for m in models if m in ("cnan", "dcn", "cnan_rowwise", "dcn_rowwise", *PEERS)],
                root,
                spec,
                scales,
                args.scaling_rows,
                args.scaling_reps,
                args.seed,
                log,
            )
    log("")
    print_table(rows + small_rows_out, log)
    base_rows = [r for r in rows if r.model.endswith(BASE)]
    rows = [r for r in rows if not r.model.endswith(BASE)]
    rat = ratios(rows, sc, cont)
    log("")
    log("ratios (crossctr / best peer): " + ", ".join(f"{k} {v}" for k, v in rat.items() if v is not None))
    if against is not None:
        assert against_dir is not None
        against.update(before_after(rows, base_rows), rows=[asdict(r) for r in base_rows])
        against_dir.cleanup()
        log("")
        log(f"before ({against['commit'][:7]}) and after (this tree), measured side by side in this run:")
        for line in against_table(against):
            log(line)
    if sc and sc["skipped"]:
        for m, pts in sc["skipped"].items():
            for s, why in pts.items():
                log(f"  scaling point skipped: {LABELS[m]} at {s}x ({why})")
    load1 = os.getloadavg()
    log(
        "torch.mm fp32 on the FCN's product during the run: "
        f"{statistics.median(calib) if calib else float('nan'):.0f} GFLOP/s (median of {len(calib)}); "
        f"load average {load1[0]:.1f} at end; {time.time() - t_start:.0f} s in all"
    )
    if sc and args.figure:
        plot_scaling(
            sc,
            Path(args.figure),
            f"{platform.machine()}, {args.threads} threads, shared machine; points missing = did not fit in memory",
        )
        log(f"figure: {Path(args.figure).name}")
    if args.out:
        import torch

        result = {
            "command": "benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "setup": {
                "train_rows": n_train,
                "test_rows": n_test,
                "fields": N_FIELDS,
                "vocabularies": vocabularies(args.vocab_scale),
                "embedding_dim": EMB_DIM,
                "cross_layers": CROSS_LAYERS,
                "deep": list(DEEP),
                "batch_size": args.batch_size,
                "eval_batch_size": EVAL_BATCH,
                "lr": LR,
                "reps": args.reps,
                "device": args.device,
                "threads": args.threads,
                "bf16": args.bf16,
                "compile": args.compile,
                "seed": args.seed,
                "malloc_tuning": not args.no_malloc_tuning,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            },
            "machine": {
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                # the load average before the first worker started says whether other jobs were running
                "shared": (
                    f"likely: load average {load0[0]:.2f} at start on {os.cpu_count()} cores"
                    if load0[0] >= 0.5 * (os.cpu_count() or 1)
                    else f"no: load average {load0[0]:.2f} at start on {os.cpu_count()} cores"
                )
                + "; models interleaved, medians taken",
                "load_average_start": round(load0[0], 2),
                "load_average_end": round(load1[0], 2),
                # bf16 matmuls run in hardware only with these flags; without them (emulated) a bf16
                # product was 8x slower than fp32 here, so the bf16 rows say nothing about a bf16 CPU
                "cpu_model": cpu_model(),
                "cpu_bf16_flags": cpu_flags("avx512_bf16", "amx_bf16"),
                "fp32_matmul_gflops": [round(c, 1) for c in calib],
            },
            "left_out": missing,
            "results": [asdict(r) for r in rows],
            "small": [asdict(r) for r in small_rows_out],
            "contention": cont,
            "flops_per_train_row": {m: flops_per_train_row(m) for m in models if not m.startswith("small_")},
            "ratios": rat,
            "against": against,
            "scaling": sc,
            "seconds": round(time.time() - t_start, 1),
        }
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        log(f"results: {Path(args.out).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
