"""`Predictor`: a run folder loaded for scoring raw rows, with no training code and no unpickling.

Example:
    >>> from crossctr.inference import Predictor                        # doctest: +SKIP
    >>> Predictor.load("runs/demo/cnan").predict(table)                 # doctest: +SKIP
    array([0.031, 0.112, ...])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from safetensors.torch import load_file
from torch import nn

from crossctr.data.dataset import EncodedSplit
from crossctr.data.encoders import FeatureEncoder
from crossctr.data.io import DataError, validate_table
from crossctr.inference.runfolder import DAMAGED, check_config, load_encoder
from crossctr.inference.score import route_scores
from crossctr.models import build_model, parse_model_config
from crossctr.schema import ConfigError

__all__ = ["Predictor", "encode_rows"]


def encode_rows(encoder: FeatureEncoder, table: pa.Table, source: str = "input") -> EncodedSplit:
    """Raw rows -> ids with a run's fitted encoders (a label column, if present, is kept; else zeros)."""
    schema = encoder.schema
    needed = [schema.domain.column, *schema.raw_feature_columns()]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; the model needs {needed}")
    has_label = schema.label in table.column_names
    if not has_label:
        table = table.append_column(schema.label, pa.array(np.zeros(table.num_rows, dtype=np.int8)))
    valid = validate_table(table.select([schema.label, *needed]), schema, source, scoring=True)
    y = valid.column(schema.label).to_numpy(zero_copy_only=False).astype(np.float32)
    return EncodedSplit.from_numpy(encoder.transform(valid), encoder.domain_ids(valid), y)


class Predictor:
    """Scores raw rows with a run folder: no training code, no unpickling."""

    def __init__(
        self, encoder: FeatureEncoder, members: dict[str, nn.Module], route: dict[str, str], config: dict[str, Any]
    ) -> None:
        self.encoder, self.members, self.route, self.config = encoder, members, route, config
        # the extra labels the model scores: empty unless it was trained with `tasks`
        self.task_names = (
            encoder.schema.task_names if getattr(parse_model_config(config["model"]), "tasks", None) else []
        )
        self.domains = list(encoder.schema.domain.values)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> Predictor:
        """Read a run folder; a missing, damaged or edited file is a ConfigError naming it (no traceback)."""
        run_dir = Path(run_dir)
        for name in ("config.json", "encoders.json", "weights.safetensors"):
            if not (run_dir / name).is_file():
                raise ConfigError(f"{run_dir}: not a run folder (missing {name})")
        source = str(run_dir / "config.json")
        try:
            config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:  # ValueError: not UTF-8, not JSON
            raise ConfigError(f"{source}: cannot be read as JSON ({err}); {DAMAGED}") from None
        encoder = load_encoder(run_dir / "encoders.json")
        model_cfg = check_config(config, encoder, source)
        wpath = run_dir / "weights.safetensors"
        try:
            weights = load_file(str(wpath), device=device)
        except Exception as err:  # SafetensorError (truncated, empty, not safetensors) derives from Exception only
            raise ConfigError(
                f"{wpath}: cannot be read as safetensors ({err}; {wpath.stat().st_size} bytes); {DAMAGED}"
            ) from None
        members = {}
        for m in config["members"]:
            prefix = f"{m}."
            try:
                model = build_model(model_cfg, config["cardinalities"], len(config["domains"]))
                model.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
            except (
                RuntimeError,
                ValueError,
                TypeError,
                IndexError,
                KeyError,
            ) as err:  # a model config or member that the weights do not fit
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ConfigError(f"{source}: member {m!r} does not match {wpath.name} ({first}); {DAMAGED}") from None
            members[m] = model.to(device).eval()
        return cls(encoder, members, config["route"], config)

    def encode(self, table: pa.Table, source: str = "input") -> EncodedSplit:
        return encode_rows(self.encoder, table, source)

    def predict_encoded(self, data: EncodedSplit, batch_size: int = 8192) -> np.ndarray:
        return route_scores(self.members, self.route, data, self.domains, batch_size)[0]  # click only

    def predict_encoded_all(self, data: EncodedSplit, batch_size: int = 8192) -> dict[str, np.ndarray]:
        """Click probabilities and, for a multi-task model, each extra label's: {"click": (N,), task: (N,)}."""
        prob, _, tasks = route_scores(self.members, self.route, data, self.domains, batch_size)
        out = {"click": prob}
        if tasks is not None:
            out.update({t: tasks[:, k] for k, t in enumerate(self.task_names)})
        return out

    def predict(self, table: pa.Table, source: str = "input") -> np.ndarray:
        """Click probabilities for raw rows (a label column, if present, is ignored)."""
        return self.predict_encoded(self.encode(table, source))
