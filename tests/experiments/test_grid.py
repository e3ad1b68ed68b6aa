"""Experiment files expand into the runs the paper's tables need, with stable keys."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import yaml

from crossctr.data.dataset import EncodedSplit
from crossctr.experiments.grid import (
    ALL,
    Experiment,
    Override,
    candidate_id,
    cell_key,
    expand,
    load_experiment,
    packaged_experiments,
    select_candidate,
    subsample_domain,
)
from crossctr.schema import ConfigError

SIZES = {"A": 20_000, "B": 2_000, "C": 150}  # dataset order; rich A, smallest C


def test_packaged_experiments_load_and_validate() -> None:
    assert {"paper", "smoke"} <= set(packaged_experiments())
    for name in ("paper", "smoke"):
        load_experiment(name)  # every method's model and train config, with every candidate, is valid


def test_paper_grid_counts() -> None:
    exp = load_experiment("paper")
    plan = expand(exp, SIZES)
    assert plan.seeds == (0, 1, 2)
    assert list(plan.scenarios) == [ALL, "A+B", "A+C"]
    phases = Counter(s.phase for s in plan.specs())
    # 11 cross-domain methods on all domains; 9 of them depend on the pairing (2 pairs);
    # 4 base models; Table 4: 3 fractions below 100% x 2 methods; all x 3 seeds.
    # Tuning: 9 CNAN-AT candidates + 3 each for DANN, GRL and Wasserstein.
    assert phases == {"table3": 11 * 3, "table2": 9 * 2 * 3, "table1": 4 * 3, "table4": 3 * 2 * 3, "tune": 9 + 3 * 3}
    keys = [s.key for s in plan.specs()]
    assert len(keys) == len(set(keys)) == 135
    # Self-train and Src-only run once, on all domains: no pair run exists for them.
    assert not [
        k
        for k in keys
        if k.split("/")[0] in ("self_train", "src_only", "dcn", "deepfm") and "/all/" not in k and "/f" not in k
    ]


def test_keys_are_stable_and_readable() -> None:
    exp = load_experiment("smoke")
    a = [s.key for s in expand(exp, SIZES).specs()]
    b = [s.key for s in expand(load_experiment("smoke"), SIZES).specs()]
    assert a == b
    assert "cnan_at/A+C/s0" in a and "cnan_at/A+C/f0.5/s0" in a and "self_train/A+C/f0.5/s0" in a
    cid = candidate_id(exp.tune["cnan_at"][0])
    assert f"cnan_at/all/t-{cid}/s0" in a
    # a candidate's id depends on its content only
    assert candidate_id(Override(train={"loss_weights": {"adv": 0.1}})) == candidate_id(
        Override.model_validate({"train": {"loss_weights": {"adv": 0.1}}})
    )


def test_order_puts_the_most_informative_runs_first() -> None:
    plan = expand(load_experiment("paper"), SIZES)
    phases = [s.phase for s in plan.specs()]
    assert phases == sorted(phases, key=["tune", "table3", "table2", "table1", "table4"].index)
    table3 = [s for s in plan.main if s.phase == "table3"]
    assert [s.seed for s in table3] == sorted(s.seed for s in table3)  # all of seed 0 before seed 1


def test_scenarios_follow_domain_sizes() -> None:
    exp = load_experiment("smoke")
    plan = expand(exp, {"X": 50, "Y": 900, "Z": 10})  # the rich domain need not come first
    assert (plan.rich, plan.smallest) == ("Y", "Z")
    assert plan.scenarios == {ALL: ("Y", "X", "Z"), "Y+X": ("Y", "X"), "Y+Z": ("Y", "Z")}
    assert plan.fraction_scenario == "Y+Z"
    t4 = [s for s in plan.main if s.phase == "table4"]
    assert {s.target for s in t4} == {"Z"} and {s.domains for s in t4} == {("Y", "Z")}
    # Table 4's Self-train trains the target's own model only: Src-only with the target as source.
    st = next(s for s in t4 if s.method == "self_train")
    cfg = st.run_config(exp, "data.yaml")
    assert st.target_only and cfg.strategy.name == "src_only" and cfg.strategy.source == "Z"
    # two domains: the pairing is the all-domains scenario, no separate pair runs
    two = expand(exp, {"A": 100, "B": 10})
    assert list(two.scenarios) == [ALL] and two.fraction_scenario == ALL
    assert all(s.scenario == ALL for s in two.main)


def test_cells_of_per_domain_methods_come_from_the_all_domains_run() -> None:
    exp = load_experiment("smoke")
    assert cell_key(exp, "self_train", "A+C", 1) == "self_train/all/s1"
    assert cell_key(exp, "cnan_at", "A+C", 1) == "cnan_at/A+C/s1"
    assert cell_key(exp, "self_train", "A+C", 1, fraction=0.5) == "self_train/A+C/f0.5/s1"


def test_only_selects_the_runs_a_table_needs() -> None:
    plan = expand(load_experiment("smoke"), SIZES).select(["table1"])
    assert {s.key for s in plan.specs()} == {"deep_only/all/s0", "dcn/all/s0"}
    t4 = expand(load_experiment("smoke"), SIZES).select(["table4"])
    keys = {s.key for s in t4.specs()}
    # Table 4 needs the 100% runs (Self-train on all, CNAN-AT on A+C) and CNAN-AT's tuning
    assert {"self_train/all/s0", "cnan_at/A+C/s0", "cnan_at/A+C/f0.5/s0", "self_train/A+C/f0.5/s0"} <= keys
    assert any(s.phase == "tune" for s in t4.specs())
    with pytest.raises(ConfigError, match="table9"):
        expand(load_experiment("smoke"), SIZES).select(["table9"])


def test_methods_narrow_the_plan_and_keep_the_tuning_their_settings_come_from() -> None:
    exp = load_experiment("smoke")
    full = expand(exp, SIZES)
    plan = full.select(["table2", "table3"], ["cnan1"], exp)
    assert {s.method for s in plan.main} == {"cnan1"}
    # CNAN₁ takes CNAN-AT's tuned λ (tune_from): its tuning runs stay, nothing else does
    assert plan.tune and {s.method for s in plan.tune} == {"cnan_at"}
    assert {s.key for s in plan.main} == {s.key for s in full.select(["table2", "table3"]).main if s.method == "cnan1"}
    assert not full.select(None, ["self_train"], exp).tune  # an untuned method needs no tuning runs
    with pytest.raises(ConfigError, match="--methods: unknown method"):
        full.select(None, ["cnan9"], exp)


def test_seeds_override_and_tuned_settings_reach_the_config() -> None:
    exp = load_experiment("smoke")
    plan = expand(exp, SIZES, seeds=(3, 4))
    assert {s.seed for s in plan.main} == {3, 4}
    assert {s.seed for s in plan.tune} == {exp.tune_seed}
    spec = next(s for s in plan.tune if s.method == "cnan_at")
    cfg = spec.run_config(exp, "d.yaml")
    weights = cfg.train.loss_weights
    assert weights["adv"] == spec.params.train["loss_weights"]["adv"]
    assert weights["disc"] == 1.0  # a partial override keeps the other weights
    assert cfg.model.shared_dim == 4 and cfg.domains == ("A", "B", "C")


def test_invalid_experiments_say_what_is_wrong(tmp_path) -> None:
    doc = {
        "name": "x",
        "methods": {"m": {"label": "M", "model": {"name": "cnan"}}},
        "tables": {"table3": {"methods": ["m", "nope"]}},
    }
    with pytest.raises(Exception, match="unknown method"):
        Experiment.model_validate(doc)
    doc["tables"] = {"table3": {"methods": ["m"]}}
    doc["methods"]["m"]["model"]["shared_dimm"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="methods.m.model"):
        load_experiment(path)
    with pytest.raises(ConfigError, match="packaged"):
        load_experiment("no-such-experiment")
    # which methods and fractions Table 4 and Figure 4 show is the experiment file's to say: no default names a method
    for table, given in (("table4", {"fractions": [0.5, 1.0]}), ("figure4", {"attention": "private"})):
        with pytest.raises(Exception, match="method"):
            Experiment.model_validate(
                {**doc, "methods": {"m": {"label": "M", "model": {"name": "cnan"}}}, "tables": {table: given}}
            )


def test_select_candidate_takes_the_best_validation_auc() -> None:
    assert select_candidate({"a": 0.70, "b": 0.72, "c": 0.71}) == "b"
    assert select_candidate({"a": 0.72, "b": 0.72}) == "a"  # ties: first listed
    assert select_candidate({"a": None, "b": float("nan")}) is None


def test_subsampling_touches_only_the_targets_training_rows(tiny_data) -> None:
    names = list(tiny_data.schema.domain.values)
    before = tiny_data.train.domain_counts(3)
    sub = subsample_domain(tiny_data, "C", 0.4, seed=0)
    after = sub.train.domain_counts(3)
    c = names.index("C")
    assert after[c] == round(0.4 * before[c])
    assert [a for k, a in enumerate(after) if k != c] == [b for k, b in enumerate(before) if k != c]
    for split in ("valid", "test"):
        assert sub.splits[split] is tiny_data.splits[split]
    # the rows of other domains are the same rows, in the same order
    keep = tiny_data.train.domain != c
    assert np.array_equal(sub.train.features[sub.train.domain != c].numpy(), tiny_data.train.features[keep].numpy())
    # seeded and nested: 10% of the target is a subset of 40% with the same seed
    small = subsample_domain(tiny_data, "C", 0.1, seed=0).train

    def rows(s: EncodedSplit) -> set[tuple[int, ...]]:
        return {tuple(r) for r in s.features[s.domain == c].tolist()}

    assert rows(small) <= rows(sub.train)
    again = subsample_domain(tiny_data, "C", 0.4, seed=0).train
    assert np.array_equal(again.features.numpy(), sub.train.features.numpy())
    with pytest.raises(ConfigError):
        subsample_domain(tiny_data, "C", 0.0, seed=0)
