"""Run records: one frozen :class:`RunRecord` per attempt, stored as JSON.

A record's top-level field order is frozen (``RECORD_FIELDS``); changing it bumps
``SCHEMA_VERSION`` and adds a ``MIGRATIONS`` entry that upgrades older records on load.
Per-item predictions are never in a record: the lifecycle returns them beside it and the
store writes them to an ``.npz`` file next to the record's JSON.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError
from bench.spec.identity import plain

#: 2 added ``kind`` (the task kind: classification | generation).
SCHEMA_VERSION = 2
STATUSES = ("success", "failed", "canceled")


@dataclass(frozen=True)
class RunRecord:
    """One run's outcome. Field order is the stored JSON's order (``RECORD_FIELDS``)."""

    run_id: str
    spec: dict[str, Any]
    """The resolved spec (the input of identity)."""
    env: dict[str, Any]
    """Commit, dirty flag, packages, CPU/GPU, device."""
    status: str
    """success | failed | canceled."""
    started_at: str
    finished_at: str
    kind: str = "classification"
    """The task kind that ran the cell."""
    metrics: dict[str, Any] = field(default_factory=dict)
    efficiency: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    curves: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"invalid status {self.status!r}")

    def to_json(self) -> dict[str, Any]:
        """The stored form: plain JSON types, fields in ``RECORD_FIELDS`` order."""
        return {name: plain(getattr(self, name)) for name in RECORD_FIELDS}

    @property
    def suite(self) -> str:
        """The suite the run belongs to (its folder in the store)."""
        return str(self.spec["suite"])

    @property
    def method_id(self) -> str:
        """The grid entry's id (its folder in the store)."""
        return str(self.spec["method"]["id"])


RECORD_FIELDS = ("schema_version", "run_id", "kind", "spec", "env", "metrics", "efficiency", "status",
                 "error", "curves", "noise", "diagnostics", "started_at", "finished_at")
assert set(RECORD_FIELDS) == {f.name for f in dataclasses.fields(RunRecord)}


def make_record(**fields: Any) -> dict[str, Any]:
    """A record's stored form from keyword fields; unknown or missing fields are errors."""
    unknown = set(fields) - set(RECORD_FIELDS)
    if unknown:
        raise ValueError(f"unknown record fields: {sorted(unknown)}")
    required = [f.name for f in dataclasses.fields(RunRecord)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = set(required) - set(fields)
    if missing:
        raise ValueError(f"missing record fields: {sorted(missing)}")
    return RunRecord(**fields).to_json()


def _v1_to_v2(record: dict[str, Any]) -> dict[str, Any]:
    task = (record.get("spec") or {}).get("task") or {}
    kind = "generation" if task.get("kind") == "generation" else "classification"
    out = {name: record.get(name) for name in RECORD_FIELDS if name in record or name == "kind"}
    out.update(schema_version=2, kind=kind)
    return {name: out[name] for name in RECORD_FIELDS if name in out}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}
"""``MIGRATIONS[n]`` upgrades a version-n record to n+1."""


def migrate(record: dict[str, Any], where: str = "record") -> dict[str, Any]:
    """Upgrade an older record to the current schema; refuse newer ones."""
    version = record.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise BenchError(f"{where}: schema_version {version!r} is not readable by this peftbench")
    while version < SCHEMA_VERSION:
        record = MIGRATIONS[version](record)
        version += 1
    return record


def now() -> str:
    """The current UTC time as a record stamps it (``2026-11-22T01:02:03Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
