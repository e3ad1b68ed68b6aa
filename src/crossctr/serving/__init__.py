"""Serving trained run folders: batch scoring of files, export to ONNX, an HTTP service.

predict   run folder + CSV/Parquet -> the same rows with a `score` column, streamed
export    run folder -> ONNX graph (features, domain) -> probability, with a parity check
app       FastAPI service over a run folder or an ONNX export
"""

__all__: list[str] = []
