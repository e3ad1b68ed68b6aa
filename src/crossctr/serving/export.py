"""Export a run folder's inference graph, and the engines that score encoded rows.

The inference graph of every run is one function

    (features int64 (B, F) per-feature ids, domain int64 (B,) domain ids) -> probability float32 (B,)

Every registered model's eval forward is its export-safe scoring path: the graph is the
model's own forward, traced, and this module knows no model. (Where a forward runs a network
per domain on that domain's rows only, `layers.fast.rows_by_group` writes the selection
without data-dependent branches while a graph is exported: nonzero -> index_select -> network ->
index_copy, an empty selection a no-op, so the graph does the model's maths and work.) The
parity check below compares the exported graph with the run's PyTorch members.

A run with several members (Self-train: one model per domain, routed by domain) becomes one
combined graph: each member scores only the rows whose domain is routed to it (the same
nonzero / index_copy selection), so one file and one onnxruntime session serve every domain
with no extra work per row.

Export folder (all a service needs, nothing pickled for ONNX):
    model.onnx | model.pt   the graph (ONNX opset >= 17, or a TorchScript archive)
    encoders.json           copied from the run: raw rows -> ids
    config.json             copied from the run: model config, members, route, version
    metrics.json            copied from the run: validation and test metrics
    export.json             manifest: format, opset, inputs/outputs, parity, checksum

Example:
    >>> from crossctr.serving.export import export_run            # doctest: +SKIP
    >>> res = export_run("runs/demo/cnan", "exports/cnan")        # doctest: +SKIP
    >>> res.max_abs_diff < 1e-5                                   # doctest: +SKIP
    True
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from torch import nn

import crossctr
from crossctr.data.dataset import Batch, EncodedSplit
from crossctr.data.encoders import N_RESERVED, FeatureEncoder
from crossctr.files import file_in
from crossctr.inference import Predictor, atomic_write, load_encoder
from crossctr.inference.predictor import encode_rows
from crossctr.schema import ConfigError

__all__ = [
    "ExportError",
    "InferenceGraph",
    "ExportResult",
    "export_run",
    "onnx_bytes",
    "random_rows",
    "input_layout",
    "Engine",
    "TorchEngine",
    "OnnxEngine",
    "ServingModel",
    "load_serving_model",
    "DEFAULT_OPSET",
    "PARITY_TOLERANCE",
]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # the dynamo exporter's native opset; 17 is the least (LayerNormalization)
PARITY_TOLERANCE = 1e-5  # max |p_export - p_torch| in fp32 before an export is refused
ExportFormat = Literal["onnx", "torchscript"]
_MODEL_FILE = {"onnx": "model.onnx", "torchscript": "model.pt"}


class ExportError(RuntimeError):
    """The exported graph does not reproduce the run's PyTorch scores, or cannot be built."""


# ---- the graph: every member's own eval forward, rows routed to members by domain ----


def _rows_of(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero().squeeze(1)  # (n,) positions, n data-dependent (0 allowed)


def _logits(m: nn.Module, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """A member's click logits (B,): its own eval forward (export-safe in every registered model)."""
    return m(Batch(x, d, torch.zeros(d.shape[0], dtype=torch.float32, device=d.device))).logits  # (B,)


class InferenceGraph(nn.Module):
    """Every member of a run in one graph: (features (B, F), domain (B,)) -> probability (B,)."""

    def __init__(self, members: dict[str, nn.Module], route: dict[str, str], domains: list[str]) -> None:
        super().__init__()
        names = list(members)
        self.member_of_domain: torch.Tensor  # (N,) buffer, registered below
        self.members = nn.ModuleList(members.values())
        # member index per domain id: the routing table as a tensor the graph can gather from
        self.register_buffer(
            "member_of_domain", torch.tensor([names.index(route[d]) for d in domains], dtype=torch.int64)
        )

    @classmethod
    def from_predictor(cls, predictor: Predictor) -> InferenceGraph:
        return cls(predictor.members, predictor.route, predictor.domains).eval()

    def forward(self, features: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            logits = _logits(self.members[0], features, domain)  # (B,)
        else:
            member = self.member_of_domain[domain]  # (B,) the member each row is routed to
            logits = torch.zeros(domain.shape[0], dtype=torch.float32, device=domain.device)  # (B,)
            for j, m in enumerate(self.members):
                rows = _rows_of(member == j)  # (n_j,)
                logits = logits.index_copy(
                    0, rows, _logits(m, features.index_select(0, rows), domain.index_select(0, rows))
                )
        return torch.sigmoid(logits)  # (B,)


def random_rows(
    cardinalities: list[int], n_domains: int, n: int, seed: int = 0, slots: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """n rows of random ids: every id a scalar feature can take (OOV, missing, vocabulary), every domain.

    `slots`: input columns per feature (multi-valued features take several, padded with 0,
    which their slots then may hold); by default one each.
    """
    rng = np.random.default_rng(seed)
    cols = []
    for c, w in zip(cardinalities, slots or [1] * len(cardinalities), strict=False):
        cols += [rng.integers(1 if w == 1 else 0, c, n) for _ in range(w)]  # PAD (0) only in multi-valued slots
    x = np.stack(cols, axis=1).astype(np.int64)  # (n, S)
    d = rng.integers(0, n_domains, n).astype(np.int64)  # (n,)
    return x, d


def input_layout(predictor: Predictor) -> tuple[list[int], list[int]]:
    """(cardinality, slots) of each feature: what the graph's `features` input columns hold."""
    cards = list(predictor.config["cardinalities"])
    slots = list(getattr(predictor.encoder.cardinalities, "slots", None) or [1] * len(cards))
    return cards, slots


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter and its optimiser log every pass and warn on internals; keep CLI output readable."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=False):
            lg.setLevel(level)


def onnx_bytes(graph: InferenceGraph, n_features: int, opset: int = DEFAULT_OPSET) -> bytes:
    """The serialised ONNX model of `graph`, with a dynamic batch dimension; `n_features`: input columns."""
    if opset < 17:
        raise ConfigError(f"opset {opset}: use 17 or later (LayerNorm-era ops and the dynamo exporter need it)")
    x = torch.full((3, n_features), N_RESERVED, dtype=torch.int64)  # batch 3: not a size the exporter specialises
    d = torch.zeros(3, dtype=torch.int64)
    batch = torch.export.Dim("batch")
    try:
        with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                graph,
                (x, d),
                dynamo=True,
                opset_version=opset,
                input_names=["features", "domain"],
                output_names=["prob"],
                dynamic_shapes=({0: batch}, {0: batch}),
                verbose=False,
            )
    except Exception as err:  # the exporter raises many types; report one
        raise ExportError(f"ONNX export failed: {type(err).__name__}: {err}") from err
    if program is None:  # dynamo=True returns the program; None is the legacy exporter's answer
        raise ExportError("ONNX export returned no program")
    return program.model_proto.SerializeToString()


def _ort_session(model: bytes | str, threads: int | None = None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("onnxruntime is not installed: pip install 'crossctr[serve]'") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _rows_per_s(fn: Callable[[np.ndarray, np.ndarray], Any], x: np.ndarray, d: np.ndarray, seconds: float) -> float:
    fn(x, d)  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn(x, d)
        n += len(d)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ExportResult:
    out: Path  # the export folder
    manifest: dict[str, Any]
    max_abs_diff: float  # exported graph vs the run's PyTorch members, on the parity rows
    rows_per_s: dict[str, float] = field(default_factory=dict)  # "<engine>@<batch>" -> rows/s


def export_run(
    run_dir: str | Path,
    out: str | Path,
    format: ExportFormat = "onnx",
    opset: int = DEFAULT_OPSET,
    parity_rows: int = 4096,
    seed: int = 0,
    tolerance: float = PARITY_TOLERANCE,
    bench_seconds: float = 0.5,
    bench_threads: int = 1,
) -> ExportResult:
    """Export a run folder's inference graph, check it against PyTorch, write the export folder.

    Parity: `parity_rows` random rows (every domain, OOV and missing ids included) are scored by
    the exported graph and by the run's own PyTorch members (`Predictor`, the original forward);
    the export is refused when the largest absolute difference reaches `tolerance`.
    `bench_seconds` > 0 also measures rows/s of both engines at batch 100 and `parity_rows`,
    each with `bench_threads` intra-op threads (1 is how a service runs them: its concurrency
    comes from concurrent requests, and threads that compete for cores slow both engines).
    """
    if format not in _MODEL_FILE:
        raise ConfigError(f"export format {format!r}: use one of {sorted(_MODEL_FILE)}")
    run_dir, out = Path(run_dir), Path(out)
    predictor = Predictor.load(run_dir)
    graph = InferenceGraph.from_predictor(predictor)
    cards, slots = input_layout(predictor)
    x, d = random_rows(cards, len(predictor.domains), parity_rows, seed, slots)

    def torch_scores(xb: np.ndarray, db: np.ndarray) -> np.ndarray:
        return predictor.predict_encoded(EncodedSplit.from_numpy(xb, db, np.zeros(len(db), np.float32)))

    if format == "onnx":
        blob = onnx_bytes(graph, sum(slots), opset)
        session = _ort_session(blob)

        def exported(xb: np.ndarray, db: np.ndarray) -> np.ndarray:
            return session.run(["prob"], {"features": xb, "domain": db})[0]

    else:
        with _quiet_exporter(), torch.no_grad():
            traced = torch.jit.trace(graph, (torch.from_numpy(x[:3]), torch.from_numpy(d[:3])), check_trace=False)
        blob = None

        def exported(xb: np.ndarray, db: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return traced(torch.from_numpy(xb), torch.from_numpy(db)).numpy()

    ref = torch_scores(x, d)
    got = np.asarray(exported(x, d), dtype=np.float64)
    diff = float(np.max(np.abs(got - ref))) if len(ref) else 0.0
    if not diff < tolerance:
        raise ExportError(
            f"{run_dir}: exported {format} graph differs from PyTorch "
            f"by up to {diff:.3g} (tolerance {tolerance:g}); not written"
        )

    speed: dict[str, float] = {}
    if bench_seconds > 0:
        threads = torch.get_num_threads()
        torch.set_num_threads(bench_threads)
        if format == "onnx" and blob is not None:  # blob is the ONNX model exactly when format is onnx
            session = _ort_session(blob, bench_threads)
        try:
            for bs in sorted({100, parity_rows}):
                speed[f"torch@{bs}"] = _rows_per_s(torch_scores, x[:bs], d[:bs], bench_seconds)
                speed[f"{format}@{bs}"] = _rows_per_s(exported, x[:bs], d[:bs], bench_seconds)
        finally:
            torch.set_num_threads(threads)

    out.mkdir(parents=True, exist_ok=True)
    model_path = out / _MODEL_FILE[format]
    if blob is not None:
        atomic_write(model_path, blob)
    else:
        tmp = out / f".{model_path.name}.tmp"
        with _quiet_exporter():  # TorchScript is deprecated in torch >= 2.9 but still the C++-loadable format
            torch.jit.save(traced, str(tmp))
        tmp.replace(model_path)
    for name in ("encoders.json", "config.json", "metrics.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)
    names = list(predictor.members)
    manifest = {
        "format": format,
        "file": model_path.name,
        "opset": opset if format == "onnx" else None,
        "sha256": _sha256(model_path),
        # the version served, the same as when the run folder itself is served: its weights' checksum
        "model_version": _sha256(run_dir / "weights.safetensors")[:12],
        "crossctr_version": crossctr.__version__,
        "torch_version": torch.__version__,
        "source_run": run_dir.name,
        "run_crossctr_version": predictor.config.get("crossctr_version"),
        "model": predictor.config["model"],
        "inputs": {
            "features": {
                "dtype": "int64",
                "shape": ["batch", sum(slots)],
                "columns": predictor.encoder.schema.feature_names,
                "slots": slots,
                "encoders": "encoders.json",
            },
            "domain": {"dtype": "int64", "shape": ["batch"], "values": predictor.domains},
        },
        "outputs": {"prob": {"dtype": "float32", "shape": ["batch"], "meaning": "click probability"}},
        "graph": "combined" if len(names) > 1 else "single",
        "members": names,
        "route": predictor.route,
        "parity": {
            "rows": parity_rows,
            "seed": seed,
            "max_abs_diff": diff,
            "tolerance": tolerance,
            "reference": "Predictor (PyTorch, original forward)",
        },
        "rows_per_s": speed,
        "bench_threads": bench_threads if speed else None,
    }
    atomic_write(out / "export.json", json.dumps(manifest, indent=2).encode())
    log.info("exported %s to %s (max abs diff %.3g)", run_dir, out, diff)
    return ExportResult(out, manifest, diff, speed)


# ---- engines: encoded rows -> probabilities ----


class Engine(abc.ABC):
    """Scores encoded rows; `encode` turns a raw Arrow table into ids (the run's encoders)."""

    name: str = "engine"

    def __init__(self, encoder: FeatureEncoder) -> None:
        self.encoder = encoder
        self.domains: list[str] = list(encoder.schema.domain.values)

    def encode(self, table: pa.Table, source: str = "input") -> EncodedSplit:
        return encode_rows(self.encoder, table, source)

    @abc.abstractmethod
    def score(self, features: np.ndarray, domain: np.ndarray) -> np.ndarray:
        """(B, F) ids, (B,) domain ids -> (B,) float64 probabilities."""


class TorchEngine(Engine):
    """The run's own PyTorch members through `Predictor`: the reference scores."""

    name = "torch"

    def __init__(self, predictor: Predictor) -> None:
        super().__init__(predictor.encoder)
        self.predictor = predictor

    def score(self, features: np.ndarray, domain: np.ndarray) -> np.ndarray:
        data = EncodedSplit.from_numpy(features, domain, np.zeros(len(domain), np.float32))
        return self.predictor.predict_encoded(data)


class OnnxEngine(Engine):
    """onnxruntime on the exported graph (CPU): as fast as PyTorch or faster at every batch size we measured."""

    name = "onnx"

    def __init__(self, encoder: FeatureEncoder, model: bytes | str, threads: int | None = None) -> None:
        super().__init__(encoder)
        self.session = _ort_session(model, threads)

    def score(self, features: np.ndarray, domain: np.ndarray) -> np.ndarray:
        if len(domain) == 0:
            return np.zeros(0, dtype=np.float64)
        feeds = {
            "features": np.ascontiguousarray(features, dtype=np.int64),
            "domain": np.ascontiguousarray(domain, dtype=np.int64),
        }
        return self.session.run(["prob"], feeds)[0].astype(np.float64)


@dataclass
class ServingModel:
    """What a service loads once: an engine plus what `GET /v1/model` reports."""

    engine: Engine
    config: dict[str, Any]  # the run's config.json
    metrics: dict[str, Any]  # the run's metrics.json ({} if absent)
    version: str  # sha256 prefix of the weights or graph file: changes whenever the model does
    source: str  # the folder's name (never a machine path)
    kind: Literal["run", "export"]
    manifest: dict[str, Any] | None = None  # export.json, for an export folder


def _read_json(path: Path) -> dict[str, Any]:
    """A folder's JSON object ({} if the file is absent); a damaged file is a ConfigError, not a traceback."""
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: not UTF-8 or not JSON
        raise ConfigError(f"{path}: cannot be read as JSON ({err}); re-create the folder") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: holds a JSON {type(obj).__name__}, not an object; re-create the folder")
    return obj


def load_serving_model(
    path: str | Path, engine: Literal["auto", "onnx", "torch"] = "auto", threads: int | None = None
) -> ServingModel:
    """Load a run folder (config.json + weights.safetensors) or an ONNX export folder (export.json).

    engine: "onnx" scores with onnxruntime (a run folder is exported in memory first, with the
    parity check); "torch" with the run's PyTorch members (run folders only); "auto" picks
    "onnx" when onnxruntime is installed, else "torch".
    """
    path = Path(path)
    if engine not in ("auto", "onnx", "torch"):
        raise ConfigError(f"engine {engine!r}: use auto, onnx or torch")
    if engine == "auto":
        try:
            import onnxruntime  # noqa: F401 - imported only to learn whether it is installed

            engine = "onnx"
        except ImportError:
            engine = "torch"
    metrics = _read_json(path / "metrics.json")
    if (path / "export.json").is_file():
        manifest = _read_json(path / "export.json")
        if manifest.get("format") != "onnx":
            raise ConfigError(
                f"{path}: a {manifest.get('format')} export; the service loads ONNX exports or run folders "
                "(TorchScript archives are pickled inside)"
            )
        if engine == "torch":
            raise ConfigError(
                f"{path}: an ONNX export has no PyTorch weights; serve "
                "the run folder for engine 'torch', or use engine 'onnx'"
            )
        config = _read_json(path / "config.json")
        missing = [k for k in ("file", "route", "sha256") if k not in manifest]
        if missing:
            raise ConfigError(f"{path}/export.json: missing {missing}; re-export the run")
        model_file = file_in(path, manifest["file"], 'export.json "file"')  # never a path out of the folder
        if not model_file.is_file():
            raise ConfigError(f"{model_file}: missing (named by export.json); re-export the run")
        encoder = load_encoder(path / "encoders.json")
        version = _sha256(model_file)
        if version != manifest.get("sha256"):
            raise ConfigError(f"{model_file}: checksum differs from export.json; re-export the run")
        try:
            eng: Engine = OnnxEngine(encoder, str(model_file), threads)
        except ConfigError:
            raise
        except Exception as err:  # onnxruntime's own error types: a graph it cannot load
            raise ConfigError(
                f"{model_file}: onnxruntime cannot load it ({type(err).__name__}: {err}); re-export the run"
            ) from None
        # an export made before model_version existed reports its graph's checksum
        return ServingModel(
            eng, config, metrics, str(manifest.get("model_version") or version[:12]), path.name, "export", manifest
        )
    predictor = Predictor.load(path)
    version = _sha256(path / "weights.safetensors")[:12]
    if engine == "torch":
        if threads:
            torch.set_num_threads(threads)
        eng = TorchEngine(predictor)
    else:
        graph = InferenceGraph.from_predictor(predictor)
        cards, slots = input_layout(predictor)
        eng = OnnxEngine(predictor.encoder, onnx_bytes(graph, sum(slots)), threads)
        x, d = random_rows(cards, len(predictor.domains), 512, 0, slots)
        diff = float(np.max(np.abs(eng.score(x, d) - TorchEngine(predictor).score(x, d))))
        if not diff < PARITY_TOLERANCE:
            raise ExportError(
                f"{path}: in-memory ONNX graph differs from PyTorch by {diff:.3g}; serve with engine 'torch'"
            )
        log.info("%s: exported to ONNX in memory (max abs diff %.3g vs PyTorch)", path.name, diff)
    return ServingModel(eng, predictor.config, metrics, version, path.name, "run")
