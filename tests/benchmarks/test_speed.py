"""The speed benchmark's own parts (the benchmark itself runs with `make bench`, not here)."""

from __future__ import annotations

import math

import numpy as np
import pytest


def test_vocabularies_span_the_issue_range(speed) -> None:  # type: ignore[no-untyped-def]
    v = speed.vocabularies(1)
    assert len(v) == 24 and v[0] == 10 and v[-1] == 100_000 and v == sorted(v)
    assert speed.vocabularies(10)[-1] == 1_000_000


def test_generated_data_is_seeded_in_range_and_learnable(speed) -> None:  # type: ignore[no-untyped-def]
    vocab = speed.vocabularies(1)
    a, b = speed.generate(5000, vocab, 3), speed.generate(5000, vocab, 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (a["x"] >= 0).all() and (a["x"] < np.array(vocab)).all()
    assert set(np.unique(a["d"])) == {0, 1, 2} and 0.1 < a["y"].mean() < 0.5
    # the planted first-order effect of the most popular ids is visible in the clicks
    head = a["x"][:, 0] == 0
    assert head.sum() > 100


def test_flops_per_row_follow_the_shapes(speed) -> None:  # type: ignore[no-untyped-def]
    dcn, cnan = speed.flops_per_train_row("dcn"), speed.flops_per_train_row("cnan")
    assert dcn == pytest.approx(3 * 2 * (1536 * 512 + 512 * 256), rel=0.01)
    assert 2.4 < cnan / dcn < 2.7  # two towers per row, wider inputs, attention


def test_ratios_against_best_peer(speed, table) -> None:  # type: ignore[no-untyped-def]
    rows = table(("cnan", 10, 40, 900), ("dcn", 30, 100, 800), ("deepctr", 12, 50, 1000), ("rechub", 15, 20, 1100))
    sc = {"train_rows_per_s": {"cnan": {"1": 10.0, "10": 9.0, "100": 8.5}, "dcn": {"1": 30.0, "10": 27.0, "100": None}}}
    r = speed.ratios(rows, sc)
    assert r["cnan_train_vs_best_peer_dcn"] == pytest.approx(10 / 15, abs=1e-3)
    assert r["dcn_train_vs_best_peer_dcn"] == 2.0 and r["predict_vs_best_peer"] == 2.0
    assert r["vocab100x_slowdown"] == pytest.approx(0.15) and r["dcn_vocab10x_slowdown"] == pytest.approx(0.1)
    assert r["dcn_vocab100x_slowdown"] is None


def test_crossctr_runner_trains_and_scores(speed) -> None:  # type: ignore[no-untyped-def]
    vocab = [5, 7, 11] + [13] * 21
    tr, te = speed.generate(300, vocab, 0), speed.generate(200, vocab, 1)
    runner = speed.CrossctrRunner("cnan", tr, te, vocab, speed.RunSpec("cpu", 1, 0, batch=256, eval_batch=128))
    assert runner.train_rows(0, 300) > 0
    secs, prob = runner.score()
    assert secs > 0 and prob.shape == (200,) and all(0 < p < 1 for p in prob) and not math.isnan(prob.sum())
