"""Tests for ``bench run --jobs N``: the same numbers as one process, and a dead worker fails only its cell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench import api
from bench.run.parallel import CellPool, thread_env, threads_per_job
from bench.spec.suite import load_suite
from tests.run_helpers import gone, running, toy_dataset, worker_pids


def _toy(tmp_path: Path) -> tuple[Path, Path]:
    toy_dataset(tmp_path / "data", 24)
    suite = tmp_path / "toy.yaml"
    suite.write_text("name: toy\nmodel: random:tiny-bert\ntasks:\n  toy: {dataset: toyds}\n"
                     "methods: {lora: {config: {r: 2, alpha: 4}}}\nseeds: [0, 1, 2]\n"
                     "train: {epochs: 1, batch_size: 8, precision: fp32}\n")
    return tmp_path / "data", suite


def _probs(results: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in results.rglob("*.preds.npz"):
        with np.load(path) as blob:
            out[path.name] = blob["probs"]
    return out


def test_jobs_give_the_numbers_of_one_process_at_the_same_thread_count(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data, suite = _toy(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_job(2))
    try:
        one = api.run_suite(load_suite(str(suite)), data_dir=data, results=tmp_path / "one", quiet=True)
    finally:
        torch.set_num_threads(threads)
    two = api.run_suite(load_suite(str(suite)), data_dir=data, results=tmp_path / "two", quiet=True, jobs=2)
    assert len(one.ran) == len(two.ran) == 3 and not one.failed and not two.failed
    assert sorted(one.ran) == sorted(two.ran)
    a, b = _probs(tmp_path / "one"), _probs(tmp_path / "two")
    assert sorted(a) == sorted(b) and len(a) == 3
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    # a rerun with jobs skips what is stored, without starting workers
    again = api.run_suite(load_suite(str(suite)), data_dir=data, results=tmp_path / "two", quiet=True, jobs=2)
    assert len(again.skipped) == 3 and not again.ran
    # issue 19 item 18: a resumed run with one cell left ran it in the parent at the parent's thread
    # count; it must run in a worker like the others, and give the same numbers
    import bench.run.parallel

    calls: list[int] = []
    real = bench.run.parallel.run_parallel

    def spy(todo: list[Any], **kwargs: Any) -> None:
        calls.append(len(todo))
        real(todo, **kwargs)

    lost = sorted((tmp_path / "two").rglob("*.preds.npz"))[0]
    lost.unlink()
    lost.with_name(lost.name.replace(".preds.npz", ".json")).unlink()
    monkeypatch.setattr(bench.run.parallel, "run_parallel", spy)
    rest = api.run_suite(load_suite(str(suite)), data_dir=data, results=tmp_path / "two", quiet=True, jobs=2)
    assert calls == [1] and len(rest.ran) == 1 and len(rest.skipped) == 2
    np.testing.assert_array_equal(_probs(tmp_path / "two")[lost.name], a[lost.name])


def die_on_b(rid: str, data_dir: Path) -> tuple[dict[str, Any], float]:
    """A cell function for the pool test: the worker running cell 'b' dies at once."""
    if rid == "b":
        os._exit(9)
    return {"status": "success", "run_id": rid, "threads": os.environ.get("OMP_NUM_THREADS")}, 0.5


def test_a_dead_worker_fails_its_cell_and_the_rest_still_run(tmp_path: Path) -> None:
    todo = list("abcd")
    outcomes = {item: (record, seconds) for item, record, seconds in
                CellPool(todo, tmp_path, jobs=1, fn=die_on_b).results()}
    assert sorted(outcomes) == ["a", "b", "c", "d"]
    assert outcomes["b"][0] is None and "worker process died" in str(outcomes["b"][1])
    for rid in "acd":
        record, seconds = outcomes[rid]
        assert record == {"status": "success", "run_id": rid, "threads": str(threads_per_job(1))}
        assert seconds == 0.5


def test_a_cell_no_worker_can_import_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a class made in this process only (a notebook's, an exec'd module's) cannot reach a fresh worker
    import types

    from bench.errors import BenchError

    module = types.ModuleType("made_here_only")
    exec("class Item:\n    pass\n", module.__dict__)  # noqa: S102 - a fixed string
    monkeypatch.setitem(sys.modules, "made_here_only", module)
    cells = CellPool([module.Item()], tmp_path, jobs=1, fn=die_on_b)
    with pytest.raises(BenchError, match=r"a worker process could not load its cell \(ModuleNotFoundError: "
                                         r"No module named 'made_here_only'\).*--in-process"):
        list(cells.results())
    assert not cells.pids()


def die_on_b_while_a_runs(rid: str, data_dir: Path) -> tuple[dict[str, Any], float]:
    """Cell 'b' dies after a moment; 'a' is still running on the other worker when it does."""
    if rid == "b":
        time.sleep(1.0)
        os._exit(9)
    if rid == "a":
        time.sleep(3.0)
    return {"status": "success", "run_id": rid, "pid": os.getpid()}, 0.5


def test_a_dead_worker_fails_only_its_own_cell(tmp_path: Path) -> None:
    # issue 19 item 17: the cell on the other worker was failed too ("died with another cell's")
    outcomes = {item: (record, seconds) for item, record, seconds in
                CellPool(list("abcd"), tmp_path, jobs=2, fn=die_on_b_while_a_runs).results()}
    assert sorted(outcomes) == ["a", "b", "c", "d"]
    assert outcomes["b"][0] is None and outcomes["b"][1] == "its worker process died (killed, or out of memory?)"
    for rid in "acd":
        assert outcomes[rid][0]["status"] == "success", outcomes[rid]


def test_a_lost_cell_runs_again_up_to_retries_and_each_attempt_keeps_its_record(tmp_path: Path) -> None:
    from bench.results.store import Store
    from bench.run.jobs import Finish, Job, RunSummary
    from bench.run.runner import resolve_suite

    data, suite = _toy(tmp_path)
    (cell, *_) = resolve_suite(load_suite(str(suite)), data)
    job, store, summary, lines = Job(cell, "[1/3]"), Store(tmp_path / "r"), RunSummary(), []
    finish = Finish(store, summary, lines.append, None, retries=1)
    assert finish.start(job) and finish.lost(job, "its worker process died") is True  # retry 1 of 1
    assert summary.retried == [cell.run_id] and not summary.failed
    assert lines[-1].endswith("its worker process died; running it again (retry 1 of 1)")
    assert not list((tmp_path / "r").rglob(".*.claim"))  # released: the retry claims it again
    assert finish.start(job) and finish.lost(job, "its worker process died") is False  # retries used up
    assert summary.failed == [cell.run_id]
    assert len(list((tmp_path / "r").rglob(f"{cell.run_id}.failed.*.json"))) == 2


def test_thread_env_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with thread_env(1):
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_sigterm_stores_every_cell_in_flight_as_canceled_and_stops_the_workers(tmp_path: Path) -> None:
    data, suite = _toy(tmp_path)
    suite.write_text(suite.read_text().replace("epochs: 1", "epochs: 100000"))  # cells that never finish
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "--suite", str(suite), "--jobs", "2",
                             "--data-dir", str(data), "--results-dir", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    started = [line for line in (proc.stdout.readline() for _ in range(2)) if line.endswith(": started\n")]
    assert len(started) == 2, started  # both workers have a cell
    workers = set(worker_pids(proc.pid))
    assert len(workers) == 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "the cells in flight were stored as canceled" in err
    canceled = sorted(results.rglob("*.canceled.*.json"))
    assert len(canceled) == 2 and not list(results.rglob("*.preds.npz"))
    assert {json.loads(p.read_text())["status"] for p in canceled} == {"canceled"}
    time.sleep(1)
    assert not [w for w in workers if _alive(w)]


PARENT = """
import threading, time
from pathlib import Path
from bench.run.parallel import CellPool
from tests.run_helpers import sleep_cell
cells = CellPool(["120", "120"], Path("."), jobs=2, fn=sleep_cell)
threading.Thread(target=lambda: list(cells.results()), daemon=True).start()
while len(cells.pids()) < 2:
    time.sleep(0.05)
print(" ".join(map(str, cells.pids())), flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_parent_killed_by_sigkill() -> None:
    # issue 19 item 14: after kill -9 of bench run, its workers kept training, reparented to init
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(running(p) for p in workers)
        parent.kill()
        parent.wait()
        assert gone(workers, within_s=10)
    finally:
        parent.kill()


def test_a_cell_on_a_worker_shows_each_epoch(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # issue 19 item 20: a long cell on a worker printed nothing until it ended
    data, suite = _toy(tmp_path)
    loaded = load_suite(str(suite), ("train.epochs=2", "seeds=[0]"))
    api.run_suite(loaded, data_dir=data, results=tmp_path / "r", jobs=2)
    err = capfd.readouterr().err
    for epoch in (1, 2):
        assert f"[1/1] toy clean lora seed0: epoch {epoch}, train_loss " in err
    assert "val_accuracy" in err
    api.run_suite(loaded, data_dir=data, results=tmp_path / "q", jobs=2, quiet=True)
    assert "epoch 1" not in capfd.readouterr().err
