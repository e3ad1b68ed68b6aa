"""The benchmark scripts are not a package: the tests load them by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SPEED_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed():  # type: ignore[no-untyped-def]
    """benchmarks/speed.py as a module, loaded afresh for each test module."""
    spec = importlib.util.spec_from_file_location("bench_speed", SPEED_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_speed"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def table(speed):  # type: ignore[no-untyped-def]
    """Rows of speed.py's main table from (model, train rows/s, score rows/s, peak RSS MB) tuples."""

    def make(*rows: tuple[str, float, float, float]) -> list:
        return [speed.Row(m, m, "", "", train_rows_per_s=t, predict_rows_per_s=p, peak_rss_mb=r) for m, t, p, r in rows]

    return make
