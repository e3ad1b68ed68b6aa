"""The main job on the embedded default: simulate three platforms, train CNAN-AT jointly and
a Self-train Deep & Cross per platform, compare per-platform test AUC, draw the attention map.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossctr.data.dataset import prepare
from crossctr.data.simulator import SimulatorConfig, write_simulated_dataset
from crossctr.evaluation.report import attention_heatmap, auc_table
from crossctr.inference import atomic_write
from crossctr.schema import DatasetSchema
from crossctr.training.config import TrainConfig
from crossctr.training.eta import duration, estimate_run
from crossctr.training.run import RunConfig, train_run

__all__ = ["DemoResult", "run_demo"]

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    table: str  # Markdown table of per-platform test AUC
    results: dict[str, Any]
    heatmap: Path
    seconds: float


def run_demo(
    out: str | Path, rows: int = 150_000, epochs: int | None = None, seed: int = 0, progress: bool = True
) -> DemoResult:
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    yaml_path = write_simulated_dataset(out / "data", SimulatorConfig(rows=rows, seed=seed))
    schema = DatasetSchema.from_yaml(yaml_path)
    data = prepare(schema, yaml_path.parent)
    for split, part in data.splits.items():
        counts = ", ".join(
            f"{d} {n:,}" for d, n in zip(schema.domain.values, part.domain_counts(schema.n_domains), strict=False)
        )
        log.info("%s rows: %s", split, counts)
    # The library's defaults (loss weighting, epoch budget with early stopping), as any run.
    train = TrainConfig.model_validate(
        {**({} if epochs is None else {"epochs": epochs}), "seed": seed, "progress": progress}
    )
    epochs = train.epochs
    methods = {
        "CNAN-AT (joint)": RunConfig.model_validate(
            {"dataset": str(yaml_path), "model": {"name": "cnan"}, "strategy": {"name": "joint"}, "train": train}
        ),
        "Self-train (Deep & Cross)": RunConfig.model_validate(
            {
                "dataset": str(yaml_path),
                "model": {"name": "single", "network": "dcn"},
                "strategy": {"name": "self_train"},
                "train": train,
            }
        ),
    }
    # Say how long it will take before it starts: a few steps of each model timed on this machine.
    estimates = {label: estimate_run(cfg, data) for label, cfg in methods.items()}
    log.info(
        "estimated training time: %s (%s)",
        duration(sum(e.seconds for e in estimates.values())),
        "; ".join(f"{label} {duration(e.seconds)} at {e.rows_per_s:,.0f} rows/s" for label, e in estimates.items()),
    )
    results: dict[str, Any] = {}
    runs = {}
    for label, cfg in methods.items():
        folder = "cnan" if label.startswith("CNAN") else "self_train"
        log.info("training %s", label)
        runs[label] = train_run(cfg, out / folder, data)
        results[label] = runs[label].metrics["test"]
    domains = list(schema.domain.values)
    table = auc_table(results, [*domains, "overall"])

    att = runs["CNAN-AT (joint)"].attention
    key = "attention_private" if "attention_private" in att else "attention_shared"
    weights = np.asarray(att[key]["per_group"])
    heatmap = attention_heatmap(
        weights, domains, att["groups"], out / "attention.png", "CNAN-AT private attention per feature group"
    )
    planted = json.loads((yaml_path.parent / "planted.json").read_text())
    summary = {
        "rows": rows,
        "epochs": epochs,
        "seed": seed,
        "test": results,
        "attention": {"kind": key, "domains": domains, "groups": att["groups"], "per_group": weights.tolist()},
        "planted_importance": planted["importance"],
        "seconds": time.perf_counter() - t0,
    }
    atomic_write(out / "results.json", json.dumps(summary, indent=2).encode())
    md = (
        f"# crossctr demo\n\nSimulated rows: {rows}, epochs: {epochs}, seed: "
        f"{seed}.\n\n{table}\n\n![attention](attention.png)\n"
    )
    atomic_write(out / "results.md", md.encode())
    return DemoResult(table, summary, heatmap, summary["seconds"])
