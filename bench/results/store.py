"""The result store: ``<root>/<suite>/<method id>/<run_id>.json``, atomic and append-only.

A successful run is ``<run_id>.json``; a failed or canceled attempt is
``<run_id>.<status>.<UTC time>.json`` beside it, so a retry never overwrites anything.
Per-item test predictions go to ``<run_id>.preds.npz``. Every file is written to a
temporary name in the same folder, flushed to disk and renamed, so a crash leaves either
the old state or the new file, never half a record.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.results.record import RunRecord, migrate


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Store:
    """A folder of run records."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, suite: str, method_id: str) -> Path:
        """Where a suite's records of one method live."""
        return self.root / suite / method_id

    def success_path(self, suite: str, method_id: str, run_id: str) -> Path:
        """The path of a successful run's record."""
        return self.folder(suite, method_id) / f"{run_id}.json"

    def succeeded(self, suite: str, method_id: str, run_id: str) -> bool:
        """True when a successful record for ``run_id`` exists."""
        return self.success_path(suite, method_id, run_id).exists()

    def write(self, record: RunRecord | dict[str, Any], predictions: dict[str, Any] | None = None) -> Path:
        """Store a record (and its per-item predictions first, if any); never overwrites a record.

        ``record`` is a :class:`RunRecord` or its stored form (``RunRecord.to_json()``).
        """
        if isinstance(record, RunRecord):
            record = record.to_json()
        spec = record["spec"]
        if predictions:
            self.write_predictions(spec["suite"], spec["method"]["id"], record["run_id"], predictions)
        suite, method_id, rid = spec["suite"], spec["method"]["id"], record["run_id"]
        if record["status"] == "success":
            path = self.success_path(suite, method_id, rid)
        else:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            path = self.folder(suite, method_id) / f"{rid}.{record['status']}.{stamp}.json"
        n = 1
        while path.exists():  # a forced rerun or two failures within a second
            path = path.with_name(f"{path.stem.split('~')[0]}~{n}.json")
            n += 1
        atomic_write_bytes(path, (json.dumps(record, indent=1) + "\n").encode())
        return path

    def write_predictions(self, suite: str, method_id: str, run_id: str, arrays: dict[str, Any]) -> Path:
        """Store per-item test predictions (npz) beside the record."""
        import io

        import numpy as np

        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        path = self.folder(suite, method_id) / f"{run_id}.preds.npz"
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def paths(self, suite: str | None = None) -> Iterator[Path]:
        """Record files (hidden temporary files excluded)."""
        base = self.root / suite if suite else self.root
        if base.is_dir():
            yield from sorted(p for p in base.rglob("*.json") if not p.name.startswith("."))

    def records(self, suite: str | None = None) -> list[dict[str, Any]]:
        """All readable records; an unreadable file is reported on stderr and skipped."""
        found = []
        for path in self.paths(suite):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object, got {type(data).__name__}")
                found.append(migrate(data, str(path)))
            except (ValueError, OSError, KeyError) as err:  # ValueError: bad JSON or UTF-8
                print(f"warning: skipping unreadable record {path}: {err}", file=sys.stderr)
        return found
