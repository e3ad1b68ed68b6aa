"""Model configs written by earlier versions still load, and a run's typed `model` keeps its written form.

The dicts below are config.json's "model" (the full config) and "run"."model" (the keys given)
of runs written by crossctr 0.1.0 before CNANConfig and TowerConfig extended the shared input
config: the same keys, defaults and values must come back. The `tower` model is now called
`single` and its `nn` is now `network`: the former names are still read, and the fingerprint
form (by_alias) writes them as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crossctr.models import CNANConfig, SingleNetwork, TowerConfig, build_model, parse_model_config
from crossctr.models.base import FORMER_NAMES
from crossctr.schema import ConfigError
from crossctr.training.run import RunConfig

OLD_CNAN = {
    "name": "cnan",
    "shared_dim": 8,
    "specific_dim": 2,
    "attention": True,
    "attention_hidden": [8, 4],
    "attention_activation": "relu",
    "cross_layers": 2,
    "deep": [16, 8],
    "stacking": "stacked",
    "dropout": 0.0,
    "norm": None,
    "private_layers": None,
    "adversarial": "grl",
    "discriminator_step": True,
    "domain_loss": True,
    "grl_scale": 1.0,
    "sparse_embeddings": False,
    "embedding_init_std": 0.01,
    "wasserstein_source": 0,
    "gp_weight": 10.0,
    "wasserstein_margin": 1.0,
    "tasks": None,
}
OLD_TOWER = {
    "name": "tower",
    "nn": "deepfm",
    "shared_dim": 64,
    "specific_dim": 8,
    "attention": True,
    "attention_hidden": [64, 32],
    "attention_activation": "relu",
    "cross_layers": 2,
    "deep": [16],
    "stacking": "stacked",
    "dropout": 0.0,
    "domain_adversarial": False,
    "grl_scale": 1.0,
    "sparse_embeddings": False,
    "embedding_init_std": 0.01,
}
OLD_RUN_MODELS = [
    {
        "name": "cnan",
        "shared_dim": 8,
        "specific_dim": 2,
        "attention_hidden": [8, 4],
        "deep": [16, 8],
        "adversarial": "grl",
    },
    {"name": "tower", "nn": "deepfm", "deep": [16]},
]


@pytest.mark.parametrize("old, cls", [(OLD_CNAN, CNANConfig), (OLD_TOWER, TowerConfig)])
def test_old_full_model_configs_load_with_the_same_keys_and_values(old: dict, cls: type) -> None:
    cfg = parse_model_config(dict(old))
    assert type(cfg) is cls
    # no key added, removed or changed in value (in the fingerprint form, which keeps renamed keys)
    assert cfg.model_dump(mode="json", by_alias=True) == old
    assert (
        parse_model_config({"name": old["name"]}).model_dump(mode="json", by_alias=True).keys() == old.keys()
    )  # defaults: the same keys


@pytest.mark.parametrize("given", OLD_RUN_MODELS)
def test_run_config_model_is_typed_and_written_as_given(given: dict) -> None:
    cfg = RunConfig.model_validate({"dataset": "data/ml.yaml", "model": given, "strategy": {"name": "self_train"}})
    assert isinstance(cfg.model, CNANConfig | TowerConfig) and cfg.model.name == FORMER_NAMES.get(
        given["name"], given["name"]
    )
    # checkpoint fingerprints keep their form; config.json "run" too, a renamed key under its new name
    assert cfg.model_dump(mode="json", by_alias=True)["model"] == given
    renamed = {("network" if k == "nn" else k): FORMER_NAMES.get(v, v) if k == "name" else v for k, v in given.items()}
    assert cfg.model_dump(mode="json")["model"] == renamed
    assert RunConfig.model_validate(cfg.model_dump(mode="json")) == cfg  # a written run config reads back equal
    assert RunConfig(dataset="d").model_dump(mode="json")["model"] == {"name": "cnan"}  # the default, as before
    assert type(RunConfig(dataset="d").model) is CNANConfig


@pytest.mark.parametrize(
    "model, error",
    [
        (
            "{name: tower, nn: deep, shared_dims: 8}",
            r"run.yaml: invalid RunConfig\n  - model: invalid "
            r"SingleNetworkConfig\n.*shared_dims: unknown key; allowed keys here: .*shared_dim",
        ),
        ("{nn: deep}", r"run.yaml: invalid RunConfig\n  - model: needs a 'name' key; registered models: \[.*'cnan'"),
    ],
)
def test_run_config_model_errors_name_the_model_and_its_keys(tmp_path: Path, model: str, error: str) -> None:
    """The typed field reports under `model`, once: the model's own message, not pydantic's wrapping."""
    (tmp_path / "run.yaml").write_text(f"dataset: d.yaml\nmodel: {model}\n")
    with pytest.raises(ConfigError, match=error):
        RunConfig.from_yaml(tmp_path / "run.yaml")


def test_tower_network_reads_its_former_name_nn() -> None:
    new = parse_model_config({"name": "tower", "network": "deepfm"})
    old = parse_model_config({"name": "tower", "nn": "deepfm"})
    assert new == old and old.network == "deepfm" and TowerConfig(nn="wide_deep").network == "wide_deep"
    assert old.model_dump(mode="json", exclude_unset=True) == {"name": "single", "network": "deepfm"}
    assert old.model_dump(mode="json", exclude_unset=True, by_alias=True) == {"name": "tower", "nn": "deepfm"}
    with pytest.raises(ConfigError, match="nn: unknown key"):  # one setting, given once
        parse_model_config({"name": "tower", "network": "deep", "nn": "dcn"})


def test_run_fingerprints_keep_the_former_key() -> None:
    """An experiment run and a checkpoint made with `nn:` keep their fingerprints when the config says `network:`."""
    from crossctr.experiments.grid import load_experiment

    exp = load_experiment("paper-quick")
    assert exp.methods["deepfm"].model == {"name": "single", "network": "deepfm"}
    old = RunConfig.model_validate({"dataset": "d", "model": {"name": "tower", "nn": "deepfm"}})
    new = RunConfig.model_validate({"dataset": "d", "model": exp.methods["deepfm"].model})
    assert old.model_dump(mode="json", by_alias=True) == new.model_dump(mode="json", by_alias=True)
    assert new.model_dump(mode="json", by_alias=True)["model"] == {"name": "tower", "nn": "deepfm"}


def test_weights_saved_under_the_former_attribute_name_load() -> None:
    """A run folder's weights from before the rename (`tower.*`, now `network.*`) load unchanged."""
    import torch

    cfg = parse_model_config({"name": "tower", "nn": "dcn", "deep": [8], "shared_dim": 4, "attention_hidden": [4]})
    model = build_model(cfg, [5, 7], 2)
    assert isinstance(model, SingleNetwork)
    state = model.state_dict()
    old = {k.replace("network.", "tower.", 1) if k.startswith("network.") else k: v for k, v in state.items()}
    assert any(k.startswith("tower.") for k in old) and not any(k.startswith("network.") for k in old)
    fresh = build_model(cfg, [5, 7], 2)
    fresh.load_state_dict(old)  # strict: every key found
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
