"""How crossctr writes JSON, which has no NaN and no infinity: the one place that decides.

A non-finite float is an AUC that cannot be computed (a domain with one class) or a best score
not yet set (-inf before the first epoch). It is written in one of two forms, by what reads it:

    finite(obj)          results files people and other tools read (metrics.json, history.json,
                         attention.json, results.jsonl, report.json): NaN and +-inf become null,
                         "no value" in any JSON reader. It does not read back as the float.
    dumps(obj) / loads   state crossctr itself must read back exactly (training checkpoints):
                         {"$float": "nan" | "inf" | "-inf"}, read back as that float. A resumed
                         fit compares new scores with the saved best, so -inf must stay -inf.

`json_default` lets `json.dumps` write numpy scalars and arrays.

Example:
    >>> finite({"auc": float("nan"), "rows": 3})
    {'auc': None, 'rows': 3}
    >>> loads(dumps({"best": float("-inf")}))
    {'best': -inf}
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["json_default", "finite", "dumps", "loads"]


def json_default(o: Any) -> Any:
    if isinstance(o, np.floating | np.integer):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def finite(obj: Any) -> Any:
    """`obj` with every NaN and infinity replaced by None (results files)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _tag(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"$float": repr(float(obj))}  # np.float64 is a float whose repr is "np.float64(inf)"
    if isinstance(obj, dict):
        return {str(k): _tag(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_tag(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / 0-d torch scalars
        return _tag(obj.item())
    return obj


def _untag(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"$float"}:
            return float(obj["$float"])
        return {k: _untag(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_untag(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Strict JSON that `loads` reads back float for float (state files: checkpoints)."""
    return json.dumps(_tag(obj), allow_nan=False, sort_keys=True)


def loads(text: str) -> Any:
    """What `dumps` wrote, with its non-finite floats back."""
    return _untag(json.loads(text))
