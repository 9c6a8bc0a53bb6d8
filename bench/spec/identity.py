"""Run identity: ``run_id = sha256(canonical_json(spec − NON_SEMANTIC_FIELDS))[:12]``.

The resolved spec of a cell (:class:`bench.spec.cells.ResolvedCell`) is its only input, so
one cell has one identity wherever it is computed.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

#: Bump when the way identity is computed changes (not when a spec gains a field).
IDENTITY_VERSION = 1
#: Spec keys that cannot change a run's numbers, left out of its identity: where it is
#: stored and how it is displayed or logged. The suite name is among them, so the same
#: cell in two suites has one identity; so is a sweep trial's ``sweep`` block (its grid and
#: point, :mod:`bench.spec.sweep`): a trial is the run of a cell that fixes those values.
#: A key is left out at any depth, so no spec field may take one of these names.
NON_SEMANTIC_FIELDS = ("suite", "output_dir", "results_dir", "log_level", "workers", "quiet", "id", "sweep")


def plain(value: Any) -> Any:
    """``value`` as plain JSON types: numpy arrays and scalars as lists and numbers, NaN as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; null reads as "not measured"
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return plain(value.tolist())
    return value


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the input of the identity hash."""
    return json.dumps(plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in NON_SEMANTIC_FIELDS}
    return obj


def run_id(spec: dict[str, Any]) -> str:
    """``sha256(canonical_json(spec − NON_SEMANTIC_FIELDS))[:12]``, salted by IDENTITY_VERSION."""
    payload = canonical_json({"identity_version": IDENTITY_VERSION, "spec": _strip(spec)})
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
