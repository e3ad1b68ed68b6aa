"""The speed benchmark times the user's path: its crossctr rows go through `Trainer.fit`, and the
trainer's loss trajectory equals the lean loop's step for step (same seed)."""

from __future__ import annotations

import os

import pytest
import torch


class _Steps:
    """A Tracker stand-in that keeps every step's loss terms."""

    def __init__(self) -> None:
        self.click: list[float] = []

    def log_step(self, key: str, step: int, values: dict[str, float]) -> None:
        self.click.append(values["click"])

    def log_epoch(self, *args: object) -> None:
        pass


def _tiny(speed):  # type: ignore[no-untyped-def]
    vocab = [5, 7, 11] + [13] * 21
    return vocab, speed.generate(600, vocab, 0), speed.generate(200, vocab, 1)


def test_crossctr_rows_train_through_trainer_fit(speed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from crossctr.training import trainer as trainer_mod

    calls = []
    real_fit = trainer_mod.Trainer.fit

    def spy(self, model, train, valid, *a, **k):  # type: ignore[no-untyped-def]
        calls.append((self.config, len(train), len(valid)))
        return real_fit(self, model, train, valid, *a, **k)

    monkeypatch.setattr(trainer_mod.Trainer, "fit", spy)
    vocab, tr, te = _tiny(speed)
    runner = speed.CrossctrRunner("cnan_rowwise", tr, te, vocab, speed.RunSpec("cpu", 1, 0, batch=256, eval_batch=128))
    assert runner.train_rows(0, 600) > 0 and runner.train_rows(100, 400) > 0
    cfg, n_train, n_valid = calls[0]
    # the library's defaults except what the row names, and one epoch per call
    assert (n_train, n_valid) == (600, 200) and len(calls) == 2 and calls[1][1] == 300
    assert (
        cfg.epochs == 1
        and cfg.precision is None
        and cfg.sparse_optimizer == "rowwise_adagrad"
        and cfg.batch_size == 256
    )
    # the bf16 rows differ only in the precision (not trained here: slow on CPUs without bf16 matmuls)
    assert (
        speed.CrossctrRunner("cnan_bf16_rowwise", tr, te, vocab, speed.RunSpec("cpu", 1, 0)).config().precision
        == "bf16"
    )
    assert cfg.domain_weighting == "rows" and cfg.weight_decay == 0.0 and cfg.fused_adam
    assert runner.model.embedding is not None and calls[0][0].seed != calls[1][0].seed  # each epoch its own order
    assert len(runner.trainer_rows_per_s) == 2 and all(r > 0 for r in runner.trainer_rows_per_s)
    secs, prob = runner.score()
    assert secs > 0 and prob.shape == (200,) and ((prob > 0) & (prob < 1)).all()


def test_default_rows_are_the_library_defaults(speed) -> None:  # type: ignore[no-untyped-def]
    assert speed.VARIANTS["cnan"] == ({"name": "cnan"}, {}, False)
    assert speed.VARIANTS["dcn"][1] == {} and "sparse_embeddings" not in speed.VARIANTS["dcn"][0]
    assert {"cnan", "cnan_bf16", "dcn", "deepctr", "rechub", "fuxictr"} <= set(speed.MODELS)


@pytest.mark.parametrize("model", ["cnan", "small_shared_bottom"])
def test_trainer_fit_follows_the_lean_loop_step_for_step(speed, model) -> None:  # type: ignore[no-untyped-def]
    """Whatever the trainer does per step besides the lean loop's work changes no loss."""
    from crossctr.data.dataset import EncodedSplit
    from crossctr.models import build_model, parse_model_config
    from crossctr.training.config import TrainConfig
    from crossctr.training.trainer import Trainer

    small = model.startswith("small_")
    vocab = speed.SMALL_VOCAB if small else [5, 7, 11] + [13] * 21
    data = speed.generate_small(700, 0) if small else speed.generate(700, vocab, 0)
    n_domains = int(data["d"].max()) + 1
    train = EncodedSplit.from_numpy(data["x"], data["d"], data["y"])
    domains = [f"d{i}" for i in range(n_domains)]
    cfg = TrainConfig(epochs=1, batch_size=128, threads=1, progress=False, device="cpu", seed=3)

    def fresh():  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        return build_model(parse_model_config(speed.VARIANTS[model][0]), vocab, n_domains)

    steps = _Steps()
    Trainer(cfg, domains, tracker=steps).fit(fresh(), train, train)  # type: ignore[arg-type]
    lean = speed.lean_fit(fresh(), train, cfg, domains)
    assert len(steps.click) == len(lean) == 6
    assert steps.click == pytest.approx(lean, rel=1e-6, abs=0)
    assert len(set(lean)) > 1  # the loss moves: a trajectory, not one value repeated


def test_small_data_has_two_features_and_two_domains(speed) -> None:  # type: ignore[no-untyped-def]
    a, b = speed.generate_small(4000, 1), speed.generate_small(4000, 1)
    assert a["x"].shape == (4000, 2) and (a["x"] == b["x"]).all()
    assert (a["x"] < speed.SMALL_VOCAB).all() and set(a["d"].tolist()) == {0, 1} and 0.1 < a["y"].mean() < 0.6


def test_ratios_carry_the_issue_names(speed, table) -> None:  # type: ignore[no-untyped-def]
    rows = table(("cnan", 8, 40, 900), ("cnan_bf16", 16, 30, 900), ("dcn", 30, 100, 800), ("deepctr", 16, 50, 1000))
    sc = {"train_rows_per_s": {"cnan_rowwise": {"1": 10.0, "100": 9.0}, "cnan": {"1": 8.0, "100": None}}}
    r = speed.ratios(rows, sc, {"slowdown": 2.1})
    assert r["cnan_train_vs_best_peer_dcn"] == 0.5 and r["cnan_bf16_train_vs_best_peer_dcn"] == 1.0
    assert (
        r["cnan_predict_vs_best_peer_dcn"] == 0.8
        and r["predict_vs_best_peer"] == 2.0
        and r["dcn_train_vs_best_peer_dcn"] == 1.875
    )
    assert r["contention_2jobs_slowdown"] == 2.1 and r["vocab100x_slowdown"] == pytest.approx(0.1)
    assert r["cnan_rss_vs_lowest_peer"] == 0.9


def test_default_threads_leave_busy_cores(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from crossctr.training import config

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for load, want in ((0.6, 4), (1.5, 3), (3.99, 1), (9.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        config.default_threads.cache_clear()
        assert config.default_threads() == want
    config.default_threads.cache_clear()


def test_cli_entry_point_sets_passive_openmp_waiting(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from crossctr import cli

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(cli, "cli", lambda **k: None)
    cli.main()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's own setting is kept
    cli.main()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_finite_check_sees_a_nan_in_a_sparse_tables_gradient(speed) -> None:  # type: ignore[no-untyped-def]
    """The per-step check reads a sparse gradient's values without coalescing them: a NaN there still stops the fit."""
    from crossctr.data.dataset import EncodedSplit
    from crossctr.models import build_model, parse_model_config
    from crossctr.training.config import TrainConfig
    from crossctr.training.trainer import Trainer

    vocab, tr, _ = _tiny(speed)
    train = EncodedSplit.from_numpy(tr["x"], tr["d"], tr["y"])
    torch.manual_seed(0)
    model = build_model(parse_model_config(speed.VARIANTS["cnan_rowwise"][0]), vocab, 3)
    tables = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding) and m.sparse]
    assert tables
    name, table = tables[0]
    table.weight.register_hook(lambda g: g * float("nan"))
    cfg = TrainConfig(
        epochs=1, batch_size=128, threads=1, progress=False, device="cpu", sparse_optimizer="rowwise_adagrad"
    )
    with pytest.raises(FloatingPointError, match=rf"non-finite gradient in \[.*'{name}.weight'"):
        Trainer(cfg, ["d0", "d1", "d2"]).fit(model, train, train)


def test_bf16_rows_left_out_with_the_reason_on_a_cpu_without_bf16(speed, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    monkeypatch.setattr(speed, "cpu_flags", lambda *names: {n: False for n in names})
    out = tmp_path / "r.json"
    assert (
        speed.main(["--quick", "--parts", "main", "--models", "cnan_bf16,dcn_bf16", "--out", str(out), "--figure", ""])
        == 0
    )
    res = json.loads(out.read_text())
    assert set(res["left_out"]) == {"cnan_bf16", "dcn_bf16"} and "avx512_bf16" in res["left_out"]["cnan_bf16"]
    assert res["results"] == [] and res["ratios"]["cnan_bf16_train_vs_best_peer_dcn"] is None


def test_against_compares_each_ratio_before_and_after(speed, table) -> None:  # type: ignore[no-untyped-def]
    """--against: the @base rows give the 'before' ratios against the same peers, and per-rep quotients."""
    rows = table(("cnan", 12, 40, 900), ("dcn", 30, 100, 800), ("deepctr", 16, 50, 1000))
    base = table(("cnan@base", 8, 40, 900), ("dcn@base", 30, 80, 800))
    for r, reps in zip(rows + base, ([10, 12, 14], [30] * 3, [16] * 3, [8, 8, 7], [30, 30, 20]), strict=False):
        r.train_rows_per_s_reps, r.predict_rows_per_s_reps = reps, [r.predict_rows_per_s] * 3
    out = speed.before_after(rows, base)
    cnan = out["ratios"]["cnan_train_vs_best_peer_dcn"]
    assert (cnan["before"], cnan["after"], cnan["after_over_before"]) == (0.5, 0.75, 1.5)
    assert out["ratios"]["predict_vs_best_peer"]["after_over_before"] == 1.25
    assert out["rows_per_s"]["cnan_train"]["after_over_before_reps"] == [1.25, 1.5, 2.0]
    assert out["rows_per_s"]["dcn_train"]["after_over_before_median"] == 1.0
    assert "deepctr_train" not in out["rows_per_s"]  # a peer has no 'before'
    assert any("cnan_train_vs_best_peer_dcn" in line for line in speed.against_table({"commit": "x", **out}))


def test_against_checks_out_the_revisions_source(speed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if not (speed.HERE.parent / ".git").exists():
        pytest.skip("not a git checkout: --against reads the revision from git")
    commit = speed.checkout_src("HEAD", tmp_path)
    assert len(commit) == 40 and (tmp_path / "src" / "crossctr" / "__init__.py").is_file()
    with pytest.raises(SystemExit, match="not a commit"):
        speed.checkout_src("no-such-revision-xyz", tmp_path)
