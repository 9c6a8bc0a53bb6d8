"""Reading run records: field accessors, cells, and the record selections shared by report and compare.

Records are plain dicts from the store's JSON; a value that is absent, null, NaN or not a
number counts as missing.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

Record = Mapping[str, Any]
Cell = tuple[str, str, str, float, str, str]


def get_path(record: Any, path: str) -> Any:
    """Follows a dotted path (``"efficiency.trainable_params"``) through nested dicts."""
    node = record
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def numeric(value: Any) -> float | None:
    """Returns ``value`` as a float, or None when it is missing, NaN or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def record_value(record: Record, key: str) -> float | None:
    """Looks up a numeric field: a dotted path, else a key of ``metrics`` or ``efficiency``."""
    if "." in key:
        return numeric(get_path(record, key))
    for section in ("metrics", "efficiency"):
        value = numeric(get_path(record, f"{section}.{key}"))
        if value is not None:
            return value
    return None


def is_success(record: Record) -> bool:
    """True when the record's status is ``"success"``."""
    return record.get("status") == "success"


def run_id(record: Record) -> str:
    """The record's run id (``"?"`` when missing)."""
    return str(record.get("run_id") or "?")


def count_canceled(records: Sequence[Record]) -> int:
    """How many of ``records`` were canceled (Ctrl-C, SIGTERM) rather than failed."""
    return sum(1 for r in records if r.get("status") == "canceled")


def cell_of(record: Record) -> Cell:
    """The (task, noise label, noise kind, noise rate, model, method) of a record."""
    task = get_path(record, "spec.task.name") or get_path(record, "spec.task.dataset") or "?"
    kind = str(get_path(record, "spec.noise.kind") or "none")
    rate = numeric(get_path(record, "spec.noise.rate")) or 0.0
    label = get_path(record, "spec.noise.label")
    if not label:
        label = "clean" if kind == "none" or rate == 0 else f"{kind}-{rate:g}"
    if kind == "none" and get_path(record, "spec.task.truth_field"):
        label = "real noise"  # the data's own labels, scored against its gold field
    model = get_path(record, "spec.model.name") or "?"
    method = get_path(record, "spec.method.id") or get_path(record, "spec.method.name") or "?"
    return str(task), str(label), kind, rate, str(model), str(method)


def cell_sort_key(cell: Cell) -> tuple[str, float, str, str, str, str]:
    """Orders cells by task, then noise rate, kind and label, then model and method."""
    task, label, kind, rate, model, method = cell
    return task, rate, kind, label, model, method


def latest_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per run id: its newest success, else its newest attempt."""
    best: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: str(r.get("finished_at"))):
        old = best.get(record["run_id"])
        if old is None or record["status"] == "success" or old["status"] != "success":
            best[record["run_id"]] = record
    return list(best.values())


def _flat_spec(spec: Any, prefix: str = "") -> dict[str, str]:
    if not isinstance(spec, dict):
        return {prefix[:-1]: json.dumps(spec, sort_keys=True)}
    out: dict[str, str] = {}
    for key, value in spec.items():
        out.update(_flat_spec(value, f"{prefix}{key}."))
    return out


def _short(value: str, width: int = 40) -> str:
    value = value.strip('"')
    return value if len(value) <= width else value[: width - 1] + "…"


def label_settings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep runs of different settings apart where they would share a cell.

    A cell (task, noise, model, method id) is meant to hold the seeds of one setting. When a
    store holds runs of one cell that differ in more than the seed (a base model next to its
    SFT via ``--set train.epochs=0``, or two learning rates), each run's method id gets the
    settings that tell them apart, e.g. ``lora (train.epochs=0)``, so that leaderboards and
    comparisons never average different settings as if they were seeds.
    """
    flats = [{k: v for k, v in _flat_spec(r.get("spec") or {}).items() if k != "seed" and not k.startswith("sweep.")}
             for r in records]  # a sweep's grid and point say where a run sits, not how it differs
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[cell_of(record)].append(i)
    out = list(records)
    for members in groups.values():
        keys = sorted({k for i in members for k in flats[i]})
        varying = [k for k in keys if len({flats[i].get(k) for i in members}) > 1]
        for i in members if varying else ():
            label = ", ".join(f"{k}={_short(flats[i].get(k, '-'))}" for k in varying)
            record = records[i]
            spec = {**record["spec"], "method": {**record["spec"].get("method", {})}}
            spec["method"]["id"] = f"{cell_of(record)[5]} ({label})"
            out[i] = {**record, "spec": spec}
    return out


def expand_variants(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add one leaderboard row per prediction variant (``metrics["variants"]``) of a record.

    The copy keeps the run's efficiency figures and is shown as ``<method id> (<variant>)``.
    """
    out = []
    for record in records:
        out.append(record)
        for name, metrics in (record.get("metrics") or {}).get("variants", {}).items():
            spec = {**record["spec"], "method": {**record["spec"]["method"]}}
            spec["method"]["id"] = f"{spec['method']['id']} ({name})"
            out.append({**record, "spec": spec, "metrics": metrics, "variant": name})
    return out
