"""One model, one version string: served from its run folder or from its export."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="needs the serve extra (onnxruntime)")

from crossctr.serving.export import load_serving_model  # noqa: E402 - only once importorskip found onnxruntime


def test_run_folder_and_export_report_the_same_version(run_dir: Path, export_dir: Path) -> None:
    from_run = load_serving_model(run_dir, engine="torch")
    from_export = load_serving_model(export_dir, engine="onnx")
    assert from_run.version and from_run.version == from_export.version
