"""Run records and run identity.

A record's top-level field order is frozen (``RECORD_FIELDS``); changing it bumps
``SCHEMA_VERSION`` and adds a ``migrate_vN`` that upgrades older records on load.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

from bench.errors import BenchError

SCHEMA_VERSION = 1
RECORD_FIELDS = ("schema_version", "run_id", "spec", "env", "metrics", "efficiency", "status",
                 "error", "curves", "noise", "diagnostics", "started_at", "finished_at")
STATUSES = ("success", "failed", "canceled")

#: Bump when the way identity is computed changes (not when a spec gains a field).
IDENTITY_VERSION = 1
#: Spec keys that cannot change a run's numbers, left out of its identity: where it is
#: stored and how it is displayed or logged. The suite name is among them, so the same
#: cell in two suites has one identity.
NON_SEMANTIC_FIELDS = ("suite", "output_dir", "results_dir", "log_level", "workers", "quiet", "id")


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; null reads as "not measured"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return _plain(value.tolist())
    return value


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the input of the identity hash."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in NON_SEMANTIC_FIELDS}
    return obj


def run_id(spec: dict[str, Any]) -> str:
    """``sha256(canonical_json(spec − NON_SEMANTIC_FIELDS))[:12]``, salted by IDENTITY_VERSION."""
    payload = canonical_json({"identity_version": IDENTITY_VERSION, "spec": _strip(spec)})
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def make_record(**fields: Any) -> dict[str, Any]:
    """A record dict in frozen field order; unknown or missing fields are errors."""
    unknown = set(fields) - set(RECORD_FIELDS)
    if unknown:
        raise ValueError(f"unknown record fields: {sorted(unknown)}")
    fields.setdefault("schema_version", SCHEMA_VERSION)
    for name in ("metrics", "efficiency", "curves", "noise", "diagnostics"):
        fields.setdefault(name, {})
    fields.setdefault("error", None)
    missing = set(RECORD_FIELDS) - set(fields)
    if missing:
        raise ValueError(f"missing record fields: {sorted(missing)}")
    if fields["status"] not in STATUSES:
        raise ValueError(f"invalid status {fields['status']!r}")
    return {name: _plain(fields[name]) for name in RECORD_FIELDS}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``MIGRATIONS[n]`` upgrades a version-n record to n+1 (none yet: version 1 is the first)."""


def migrate(record: dict[str, Any], where: str = "record") -> dict[str, Any]:
    """Upgrade an older record to the current schema; refuse newer ones."""
    version = record.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise BenchError(f"{where}: schema_version {version!r} is not readable by this peftbench")
    while version < SCHEMA_VERSION:
        record = MIGRATIONS[version](record)
        version += 1
    return record


def now() -> str:
    """The current UTC time as a record stamps it (``2026-11-22T01:02:03Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
