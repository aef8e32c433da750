"""Turning Python, NumPy and pandas values into strict JSON values (no NaN, no infinities)."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any


def jsonable(v: Any) -> Any:
    """Return v as plain JSON data: NumPy arrays and scalars, pandas frames (as records) and series, dates,
    tuples and sets are converted; NaN and infinities become None, as strict JSON has no place for them."""
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [jsonable(x) for x in v]
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    to_dict = getattr(v, "to_dict", None)
    if callable(to_dict) and hasattr(v, "columns"):  # pandas DataFrame
        return jsonable(to_dict(orient="records"))
    tolist = getattr(v, "tolist", None)  # NumPy arrays and scalars, pandas Series
    if callable(tolist):
        return jsonable(tolist())
    item = getattr(v, "item", None)
    if callable(item):
        return jsonable(item())
    if isinstance(v, (bytes, bytearray)):
        import hashlib

        return {"sha256": hashlib.sha256(v).hexdigest(), "size": len(v)}
    return str(v)
