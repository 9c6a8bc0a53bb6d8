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

from bench.errors import BenchError
from bench.processes import pid_alive
from bench.results.claims import claim_path, describe, release, try_claim
from bench.results.record import RunRecord, migrate

#: Where unreadable record files are moved, inside the store's root.
CORRUPT = "_corrupt"
#: The probe file :meth:`Store.check_writable` writes and removes.
WRITE_CHECK = ".write-check"
#: Seconds after which a predictions file without its record counts as left by a killed run.
ORPHAN_AGE_S = 60.0




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
        """True when a readable successful record for ``run_id`` exists.

        A file there that does not parse as a record (truncated, corrupt, ``{}``) is not a
        success: it is moved aside to ``<root>/_corrupt/`` (reported on stderr), so the cell runs
        again instead of being skipped for good.
        """
        path = self.success_path(suite, method_id, run_id)
        if not path.exists():
            return False
        try:
            record = read_record(path)
        except (ValueError, OSError, KeyError) as err:
            self.quarantine(path, str(err))
            return False
        return record.get("status") == "success"

    def claim(self, suite: str, method_id: str, run_id: str) -> bool:
        """Claim a cell for this process (:mod:`bench.results.claims`); False when another run holds it."""
        return try_claim(claim_path(self.folder(suite, method_id), run_id))

    def claimed_by(self, suite: str, method_id: str, run_id: str) -> str:
        """Who holds a cell's claim: ``pid 123 on host h``."""
        return describe(claim_path(self.folder(suite, method_id), run_id))

    def release(self, suite: str, method_id: str, run_id: str) -> None:
        """Drop this process's claim on a cell (after its record is written)."""
        release(claim_path(self.folder(suite, method_id), run_id))

    def check_writable(self, suite: str) -> None:
        """Write, rename and remove a probe file in ``<root>/<suite>/``, as records are written.

        Called before any cell trains, so a results directory that is a file, read-only or full
        fails the run up front instead of after the first cell's training.

        Raises:
            BenchError: one line naming the directory and the system's reason.
        """
        folder = self.root / suite
        probe = folder / WRITE_CHECK
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(probe, b"peftbench write check\n")
            probe.unlink()
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise BenchError(f"cannot write results to {folder} ({reason}); pass a writable --results-dir "
                             "or free space") from None

    def sweep(self, suite: str) -> list[Path]:
        """Remove what a killed run left in ``<root>/<suite>/``; return the removed paths.

        - hidden temporary files ``.<name>.<pid>.tmp`` whose writer (``pid``, on this host) is gone;
        - ``<run_id>.preds.npz`` without a record of that run (written first, the record never
          came), when older than :data:`ORPHAN_AGE_S` so that a live writer's pair is left alone.
        """
        folder = self.root / suite
        removed: list[Path] = []
        if not folder.is_dir():
            return removed
        for path in folder.rglob(".*.tmp"):
            pid = path.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not pid_alive(int(pid)):
                removed.append(path)
        for path in folder.rglob("*.preds.npz"):
            rid = path.name.removesuffix(".preds.npz")
            if not any(path.parent.glob(f"{rid}*.json")) and time.time() - path.stat().st_mtime > ORPHAN_AGE_S:
                removed.append(path)
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move an unreadable record file to ``<root>/_corrupt/`` (same relative path, never overwritten)."""
        target = self.root / CORRUPT / path.relative_to(self.root)
        n = 1
        while target.exists():
            target = target.with_name(f"{path.stem}~{n}{path.suffix}")
            n += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        print(f"warning: unreadable record {path} ({reason}) moved to {target}; its cell will run again",
              file=sys.stderr)
        return target

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

    def read_predictions(self, suite: str, method_id: str, run_id: str) -> dict[str, Any] | None:
        """A run's stored per-item arrays (``<run_id>.preds.npz``, no pickles), or None without any.

        An unreadable file is reported on stderr and read as None.
        """
        import numpy as np

        path = self.folder(suite, method_id) / f"{run_id}.preds.npz"
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError) as err:  # ValueError: not an npz, or pickled arrays
            print(f"warning: skipping unreadable predictions {path}: {err}", file=sys.stderr)
            return None

    def paths(self, suite: str | None = None) -> Iterator[Path]:
        """Record files (hidden temporary files and ``_corrupt/`` excluded)."""
        base = self.root / suite if suite else self.root
        if base.is_dir():
            yield from sorted(p for p in base.rglob("*.json") if not p.name.startswith(".")
                              and CORRUPT not in p.relative_to(self.root).parts)

    def records(self, suite: str | None = None) -> list[dict[str, Any]]:
        """All readable records; an unreadable file is reported on stderr and skipped."""
        found = []
        for path in self.paths(suite):
            try:
                found.append(read_record(path))
            except (ValueError, OSError, KeyError) as err:  # ValueError: bad JSON or UTF-8
                print(f"warning: skipping unreadable record {path}: {err}", file=sys.stderr)
        return found


def read_record(path: Path) -> dict[str, Any]:
    """One record file, migrated to the current schema.

    Raises:
        ValueError: not JSON, not an object, or no integer ``schema_version`` (not a record).
        BenchError: a record of a newer schema than this peftbench reads.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"not a record: schema_version {version!r}")
    return migrate(data, str(path))
