"""Tests for bench.results.store: layout, append-only writes, crash safety, unreadable files."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import bench.results.store
from bench.errors import BenchError
from bench.results.record import make_record
from bench.results.store import Store, atomic_write_bytes

RID = "0123456789ab"
STAMP = time.struct_time((2025, 1, 2, 3, 4, 5, 3, 2, 0))  # 2025-01-02 03:04:05 UTC


def record(rid: str = RID, *, status: str = "success", suite: str = "tiny", method: str = "lora",
           finished: str = "2025-01-01T00:01:00Z", accuracy: float = 0.5) -> dict[str, Any]:
    return make_record(
        run_id=rid, spec={"suite": suite, "method": {"id": method, "name": "lora"}, "seed": 0},
        env={"device": "cpu"}, status=status, error=None if status == "success" else "boom",
        metrics={"accuracy": accuracy}, started_at="2025-01-01T00:00:00Z", finished_at=finished,
    )


def visible_json(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.json") if not p.name.startswith("."))


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "gmtime", lambda *_: STAMP)


# --- layout and round trip ---------------------------------------------------------------

def test_round_trip_and_success_path(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rec = record()
    path = store.write(rec)
    assert path == tmp_path / "tiny" / "lora" / f"{RID}.json"
    assert path == store.success_path("tiny", "lora", RID)
    assert store.records() == [rec]
    assert store.records("tiny") == [rec]
    assert store.records("other") == []
    assert list(store.paths()) == [path]


def test_file_format_is_stable(tmp_path: Path) -> None:
    path = Store(tmp_path).write(record())
    # golden: fields in RECORD_FIELDS order, indent 1, trailing newline
    assert path.read_text() == """\
{
 "schema_version": 2,
 "run_id": "0123456789ab",
 "kind": "classification",
 "spec": {
  "suite": "tiny",
  "method": {
   "id": "lora",
   "name": "lora"
  },
  "seed": 0
 },
 "env": {
  "device": "cpu"
 },
 "metrics": {
  "accuracy": 0.5
 },
 "efficiency": {},
 "status": "success",
 "error": null,
 "curves": {},
 "noise": {},
 "diagnostics": {},
 "started_at": "2025-01-01T00:00:00Z",
 "finished_at": "2025-01-01T00:01:00Z"
}
"""


def test_succeeded(tmp_path: Path, fixed_clock: None) -> None:
    store = Store(tmp_path)
    assert not store.succeeded("tiny", "lora", RID)
    store.write(record(status="failed"))
    store.write(record(status="canceled"))
    assert not store.succeeded("tiny", "lora", RID)
    store.write(record())
    assert store.succeeded("tiny", "lora", RID)
    assert not store.succeeded("tiny", "full-ft", RID)  # another method id
    assert not store.succeeded("other", "lora", RID)  # another suite
    assert not store.succeeded("tiny", "lora", "ffffffffffff")


def test_empty_or_missing_root(tmp_path: Path) -> None:
    assert Store(tmp_path / "nothing").records() == []
    assert list(Store(tmp_path / "nothing").paths("tiny")) == []


# --- append-only -------------------------------------------------------------------------

def test_failures_get_timestamped_files_and_never_overwrite(tmp_path: Path, fixed_clock: None) -> None:
    store = Store(tmp_path)
    first = store.write(record(status="failed", accuracy=0.1))
    second = store.write(record(status="failed", accuracy=0.2))  # same second
    canceled = store.write(record(status="canceled"))
    folder = tmp_path / "tiny" / "lora"
    assert first == folder / f"{RID}.failed.20250102T030405Z.json"
    assert second == folder / f"{RID}.failed.20250102T030405Z~1.json"
    assert canceled == folder / f"{RID}.canceled.20250102T030405Z.json"
    assert json.loads(first.read_text())["metrics"] == {"accuracy": 0.1}
    assert json.loads(second.read_text())["metrics"] == {"accuracy": 0.2}
    assert len(store.records()) == 3


def test_second_success_does_not_overwrite_first(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = store.write(record(accuracy=0.5))
    before = first.read_bytes()
    second = store.write(record(accuracy=0.9, finished="2025-01-02T00:00:00Z"))
    third = store.write(record(accuracy=0.7, finished="2025-01-03T00:00:00Z"))
    assert second == first.with_name(f"{RID}~1.json")
    assert third == first.with_name(f"{RID}~2.json")
    assert first.read_bytes() == before
    assert sorted(r["metrics"]["accuracy"] for r in store.records()) == [0.5, 0.7, 0.9]


def test_predictions_beside_record(tmp_path: Path) -> None:
    store = Store(tmp_path)
    path = store.write_predictions("tiny", "lora", RID, {"ids": np.arange(3), "probs": np.eye(3)})
    assert path == tmp_path / "tiny" / "lora" / f"{RID}.preds.npz"
    with np.load(path) as loaded:
        assert loaded["ids"].tolist() == [0, 1, 2]
        assert loaded["probs"].tolist() == np.eye(3).tolist()
    assert store.records() == []  # not a record
    assert all_files(tmp_path) == [f"tiny/lora/{RID}.preds.npz"]


# --- crash safety ------------------------------------------------------------------------

def test_crash_in_rename_leaves_old_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    old = store.write(record())
    old_bytes = old.read_bytes()

    def crash(*_: Any) -> None:
        raise OSError("simulated crash in rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.write(record(accuracy=0.9))  # would be <rid>~1.json
    with pytest.raises(OSError, match="simulated crash"):
        store.write(record("ba9876543210"))  # a new run id
    monkeypatch.undo()

    assert old.read_bytes() == old_bytes
    assert store.records() == [record()]
    assert all_files(tmp_path) == [f"tiny/lora/{RID}.json"]  # no temporary file left behind


class _HalfWriter:
    """A file handle that writes half the payload, then fails (disk full, killed)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.close()

    def write(self, payload: bytes) -> int:
        self.handle.write(payload[: len(payload) // 2])
        self.handle.flush()
        raise OSError(28, "No space left on device")


def test_crash_mid_write_leaves_no_partial_record(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    old = store.write(record())
    old_bytes = old.read_bytes()
    seen: list[Path] = []

    def half_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        seen.append(Path(path))
        return _HalfWriter(open(path, mode, *args, **kwargs))

    monkeypatch.setattr(bench.results.store, "open", half_open, raising=False)
    with pytest.raises(OSError, match="No space left"):
        store.write(record(accuracy=0.9))
    with pytest.raises(OSError, match="No space left"):
        store.write(record("ba9876543210"))
    monkeypatch.undo()

    # the writes went to hidden ".<name>.<pid>.tmp" files in the target folder ...
    folder = tmp_path / "tiny" / "lora"
    assert seen == [folder / f".{RID}~1.json.{os.getpid()}.tmp",
                    folder / f".ba9876543210.json.{os.getpid()}.tmp"]
    # ... which were removed; the old record is intact and the only one visible
    assert all_files(tmp_path) == [f"tiny/lora/{RID}.json"]
    assert old.read_bytes() == old_bytes
    assert store.records() == [record()]
    assert not store.succeeded("tiny", "lora", "ba9876543210")


def test_leftover_temporary_file_from_killed_process_is_hidden(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path)
    store.write(record())
    folder = tmp_path / "tiny" / "lora"
    # a process killed between write and rename leaves its temporary file
    (folder / ".ba9876543210.json.4242.tmp").write_text('{"schema_version": 1, "run_')
    (folder / ".ba9876543210.json").write_text("{")  # any hidden name, even ending in .json
    assert store.records() == [record()]
    assert not store.succeeded("tiny", "lora", "ba9876543210")
    assert capsys.readouterr().err == ""  # hidden files are not even looked at


def test_atomic_write_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert all_files(tmp_path) == ["deep/file.bin"]


# --- unreadable files --------------------------------------------------------------------

@pytest.mark.parametrize("content", [
    b'{"schema_version": 1, "run_id": "abc',  # truncated
    b"",  # empty
    b"\x00\x00\x00\x00",  # zero-filled after a power cut
    b"\xff\xfe\x80 not utf-8",  # binary garbage
    b"[1, 2, 3]",  # JSON, but not an object
    b"null",
    b"{}",  # an object, but no record (it used to abort report and compare for the whole store)
    b'{"schema_version": "1"}',
])
def test_corrupted_file_is_skipped_with_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                content: bytes) -> None:
    store = Store(tmp_path)
    good = store.write(record())
    bad = good.with_name("ffffffffffff.json")
    bad.write_bytes(content)
    assert store.records() == [record()]
    err = capsys.readouterr().err
    assert err.startswith(f"warning: skipping unreadable record {bad}")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b'{"schema_version": 2, "run_id": "01234', b"", b"{}", b"\x00\x00"])
def test_unreadable_success_is_not_done_and_moves_aside(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        content: bytes) -> None:
    # a truncated or corrupt success file must not make the runner skip its cell for good
    store = Store(tmp_path)
    path = store.write(record())
    path.write_bytes(content)
    assert not store.succeeded("tiny", "lora", RID)
    assert not path.exists()
    moved = tmp_path / "_corrupt" / "tiny" / "lora" / f"{RID}.json"
    assert moved.read_bytes() == content
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: unreadable record {path}") and "run again" in err[0]
    assert store.records() == []  # _corrupt/ is not part of the store's records
    store.write(record())  # the rerun's success lands where the corrupt one was
    assert store.succeeded("tiny", "lora", RID) and store.records() == [record()]
    path.write_bytes(content)
    assert not store.succeeded("tiny", "lora", RID)  # a second corrupt file is moved aside beside the first
    assert sorted(p.name for p in moved.parent.iterdir()) == [f"{RID}.json", f"{RID}~1.json"]


def test_readable_success_stays_done(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write(record())
    assert store.succeeded("tiny", "lora", RID) and not (tmp_path / "_corrupt").exists()


def test_newer_schema_is_refused_naming_the_file(tmp_path: Path) -> None:
    store = Store(tmp_path)
    path = store.write(record())
    newer = json.loads(path.read_text())
    newer["schema_version"] = 3
    path.write_text(json.dumps(newer))
    with pytest.raises(BenchError, match=f"{path}: schema_version 3 is not readable"):
        store.records()


# --- latest_records ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def api() -> ModuleType:
    import bench.api  # imports the runner (and torch) once for this module

    return bench.api


def test_latest_records_keeps_newest_success_per_run_id(tmp_path: Path, fixed_clock: None,
                                                        api: ModuleType) -> None:
    store = Store(tmp_path)
    other = "ba9876543210"
    store.write(record(accuracy=0.5, finished="2025-01-01T00:00:00Z"))
    store.write(record(accuracy=0.9, finished="2025-01-03T00:00:00Z"))  # newest success
    store.write(record(accuracy=0.7, finished="2025-01-02T00:00:00Z"))
    store.write(record(status="failed", accuracy=0.0, finished="2025-01-04T00:00:00Z"))  # newer
    store.write(record(other, status="failed", accuracy=0.1, finished="2025-01-01T00:00:00Z"))
    store.write(record(other, status="canceled", accuracy=0.2, finished="2025-01-02T00:00:00Z"))
    store.write(record("cccccccccccc", status="success", accuracy=0.3))

    latest = {r["run_id"]: r for r in api.latest_records(store.records())}
    assert sorted(latest) == [RID, other, "cccccccccccc"]
    assert (latest[RID]["status"], latest[RID]["metrics"]["accuracy"]) == ("success", 0.9)
    # no success: the newest attempt
    assert (latest[other]["status"], latest[other]["metrics"]["accuracy"]) == ("canceled", 0.2)
    assert latest["cccccccccccc"]["metrics"]["accuracy"] == 0.3


def test_latest_records_does_not_depend_on_input_order(api: ModuleType) -> None:
    recs = [record(accuracy=a, finished=f"2025-01-0{d}T00:00:00Z") for a, d in
            ((0.1, 1), (0.4, 4), (0.2, 2), (0.3, 3))]
    for order in (recs, recs[::-1], recs[2:] + recs[:2]):
        (only,) = api.latest_records(order)
        assert only["metrics"]["accuracy"] == 0.4


def test_sweep_removes_what_a_killed_run_left_and_nothing_else(tmp_path: Path) -> None:
    # issue 19 item 19: a kill at the rename leaves .<name>.<pid>.tmp files, a kill between the
    # predictions and the record a preds file without its record; neither was ever cleaned
    store = Store(tmp_path)
    store.write(record(), {"probs": np.zeros((2, 2))})                     # a complete pair: kept
    folder = store.folder("tiny", "lora")
    dead = subprocess.Popen(["true"])
    dead.wait()                                                            # a pid that is gone
    stale = [folder / f".{RID}.json.{dead.pid}.tmp", folder / f".{RID}.preds.npz.{dead.pid}.tmp"]
    live = folder / f".x.json.{os.getpid()}.tmp"                           # a writer still running
    orphan, fresh = folder / "aaaaaaaaaaaa.preds.npz", folder / "bbbbbbbbbbbb.preds.npz"
    for path in (*stale, live, orphan, fresh):
        path.write_bytes(b"x")
    old = time.time() - 2 * bench.results.store.ORPHAN_AGE_S
    os.utime(orphan, (old, old))
    os.utime(folder / f"{RID}.preds.npz", (old, old))
    assert sorted(store.sweep("tiny")) == sorted([*stale, orphan])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{RID}.json", f"{RID}.preds.npz", live.name, fresh.name])
    assert store.sweep("tiny") == [] and store.sweep("no-such-suite") == []
