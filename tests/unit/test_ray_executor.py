"""``bench run --executor ray``: the records of ``--executor local``, a killed worker fails only its cell, bad input.

One local Ray cluster (two CPUs) serves the whole module: Ray takes seconds to start on a
2-core machine, so every test here shares it and runs tiny toy cells.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import api
from bench.cli import main
from bench.run.ray_executor import lost_reason
from bench.spec.suite import load_suite
from tests.run_helpers import toy_dataset

ray = pytest.importorskip("ray")

TOY = """name: toy
model: random:tiny-bert
tasks:
  toy: {dataset: toyds}
methods: {lora: {config: {r: 2, alpha: 4}}}
seeds: [0, 1]
train: {epochs: 2, batch_size: 8, lr: 5.0e-3, precision: fp32}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def toy(tmp_path: Path, text: str = TOY) -> tuple[Path, Path]:
    data = toy_dataset(tmp_path / "data", 24)
    suite = tmp_path / "toy.yaml"
    suite.write_text(text)
    return data, suite


def stored(results: Path) -> dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """run id -> (the successful record, its predictions)."""
    out = {}
    for path in results.rglob("*[0-9a-f].json"):
        with np.load(path.with_name(path.stem + ".preds.npz")) as blob:
            out[path.stem] = (json.loads(path.read_text()), {k: blob[k] for k in blob.files})
    return out


def test_ray_gives_the_records_of_the_local_executor(cluster: None, tmp_path: Path) -> None:
    data, suite = toy(tmp_path)
    local = api.run_suite(load_suite(str(suite)), data_dir=data, results=tmp_path / "local", quiet=True, jobs=2)
    on_ray = api.run_suite(load_suite(str(suite)), data_dir=data, results=tmp_path / "ray", quiet=True,
                           executor="ray")
    assert sorted(local.ran) == sorted(on_ray.ran) and len(on_ray.ran) == 2 and not on_ray.failed
    a, b = stored(tmp_path / "local"), stored(tmp_path / "ray")
    assert sorted(a) == sorted(b)
    for rid, (record, preds) in a.items():
        other, other_preds = b[rid]
        assert other["metrics"] == record["metrics"]  # bit for bit: one-CPU Ray cells run one thread
        assert other["env"]["torch_threads"] == record["env"]["torch_threads"] == 1
        for name, array in preds.items():
            np.testing.assert_array_equal(other_preds[name], array)
    # a rerun skips what is stored without submitting anything
    again = api.run_suite(load_suite(str(suite)), data_dir=data, results=tmp_path / "ray", quiet=True,
                          executor="ray")
    assert len(again.skipped) == 2 and not again.ran


def kill_worker_of(run_id: str, times: int, stop: threading.Event) -> threading.Thread:
    """Kill -9, ``times`` times, the Ray worker process running cell ``run_id`` (its title is ``ray::cell <id>``)."""
    def hunt() -> None:
        left = times
        while left and not stop.is_set():
            for entry in Path("/proc").iterdir():
                try:
                    title = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if entry.name.isdigit() and title.startswith(f"ray::cell {run_id}".encode()):
                    time.sleep(0.3)
                    os.kill(int(entry.name), signal.SIGKILL)
                    left -= 1
                    time.sleep(1.0)  # its replacement, if any, gets a new pid
                    break
            time.sleep(0.05)

    thread = threading.Thread(target=hunt, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_a_sweep_runs_on_ray_as_one_plain_task_per_trial(cluster: None, tmp_path: Path) -> None:
    """Trials are cells: Ray runs each as a task, and the driver stores each as its own record."""
    data, suite = toy(tmp_path, TOY.replace("config: {r: 2, alpha: 4}}", "config: {r: 2, alpha: 4}, "
                                            "sweep: {train.lr: [1.0e-3, 5.0e-3]}}").replace("[0, 1]", "[0]"))
    on_ray = api.run_suite(load_suite(str(suite)), data_dir=data, results=tmp_path / "ray", quiet=True,
                           executor="ray")
    assert len(on_ray.ran) == 2 and not on_ray.failed
    records = [record for record, _ in stored(tmp_path / "ray").values()]
    assert sorted(r["spec"]["sweep"]["trial"]["train.lr"] for r in records) == [1e-3, 5e-3]
    assert all("val_accuracy" in r["metrics"] for r in records)


def test_a_killed_ray_worker_fails_only_its_cell_and_is_run_again(cluster: None, tmp_path: Path) -> None:
    data, suite = toy(tmp_path, TOY.replace("epochs: 2", "epochs: 40"))  # cells long enough to be killed
    results, stop = tmp_path / "results", threading.Event()
    loaded = load_suite(str(suite))
    from bench.run.runner import resolve_suite

    victim, other = (c.run_id for c in resolve_suite(loaded, data))
    try:
        hunter = kill_worker_of(victim, 1, stop)
        first = api.run_suite(loaded, data_dir=data, results=results, quiet=True, executor="ray")
        hunter.join(timeout=5)
        assert first.failed == [victim] and first.ran == [other]  # the cell beside it was not touched
        (failed,) = results.rglob(f"{victim}.failed.*.json")
        assert json.loads(failed.read_text())["error"] == "its Ray worker process died (killed, or out of memory?)"
        # the rerun runs the failed cell; with --retries 1 its killed first attempt is run again at once
        hunter = kill_worker_of(victim, 1, stop)
        rerun = api.run_suite(loaded, data_dir=data, results=results, quiet=True, executor="ray", retries=1)
        hunter.join(timeout=5)
    finally:
        stop.set()
    assert rerun.ran == [victim] and rerun.skipped == [other] and rerun.retried == [victim] and not rerun.failed
    assert len(list(results.rglob(f"{victim}.failed.*.json"))) == 2  # each lost attempt keeps its record
    assert set(stored(results)) == {victim, other}
    assert not list(results.rglob(".*.claim"))


def ray_cells() -> list[int]:
    """Pids of the Ray workers running a cell now."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::cell "):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


#: Seconds the Ctrl-C test may take before it is taken for hung (it takes about 10 s).
HANG_S = 300


def watchdog(request: pytest.FixtureRequest, seconds: float) -> threading.Event:
    """Unless the event is set within ``seconds``: every thread's stack to the terminal, then exit 1.

    So a hang ends as a failure that shows where each thread was (pytest's capture would swallow a
    faulthandler dump, and the process ends before it shows what it captured).
    """
    done = threading.Event()

    def watch() -> None:
        if done.wait(seconds):
            return
        capture = request.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:  # what is written while pytest captures would be lost with the process
            capture.suspend_global_capture(in_=True)
        writer = request.config.get_terminal_writer()
        writer.line(f"\n{request.node.nodeid}: hung for {seconds:g} s; the stack of every thread:")
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            writer.line(f"--- thread {names.get(ident, ident)}")
            writer.line("".join(traceback.format_stack(frame)))
        writer.flush()
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    return done


# slow: in a full CI run on the 2-core EPYC (2026-12-04) this test hung for over 11 minutes with
# both never-ending cells still running, though it passed when run alone (and in a full run with
# -m 'not gpu' on the 2-core Xeon, 2026-12-07); until that is understood it stays out of the
# default run (run it with -m slow). Should it hang again, the watchdog ends the process after
# HANG_S with every thread's stack on the terminal, which is what the cause has been missing.
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_ctrl_c_cancels_the_ray_tasks_and_stores_their_cells_as_canceled(cluster: None, tmp_path: Path,
                                                                        request: pytest.FixtureRequest) -> None:
    data, suite = toy(tmp_path, TOY.replace("epochs: 2", "epochs: 100000"))  # cells that never finish
    results = tmp_path / "results"

    def interrupt_once_both_run() -> None:
        deadline = time.monotonic() + 60
        while len(ray_cells()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C (the CLI turns SIGTERM into the same)

    threading.Thread(target=interrupt_once_both_run, daemon=True).start()
    done = watchdog(request, HANG_S)
    try:
        with pytest.raises(KeyboardInterrupt):
            api.run_suite(load_suite(str(suite)), data_dir=data, results=results, quiet=True, executor="ray")
    finally:
        done.set()
    canceled = sorted(results.rglob("*.canceled.*.json"))
    assert len(canceled) == 2 and not list(results.rglob("*.preds.npz")) and not list(results.rglob(".*.claim"))
    assert {json.loads(p.read_text())["error"] for p in canceled} == {"interrupted by the user"}
    deadline = time.monotonic() + 15
    while ray_cells() and time.monotonic() < deadline:  # force-canceled: their workers are killed
        time.sleep(0.1)
    assert not ray_cells()


def test_bad_ray_input_is_one_error_line_before_training(cluster: None, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data, suite = toy(tmp_path)
    results = tmp_path / "results"
    base = ["run", "--suite", str(suite), "--data-dir", str(data), "--results-dir", str(results), "--quiet"]

    def error_of(*extra: str) -> str:
        assert main([*base, *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    assert "cannot reach a Ray cluster at 127.0.0.1:1 (Connection refused)" in \
        error_of("--executor", "ray", "--address", "127.0.0.1:1")
    assert error_of("--executor", "ray", "--set", "resources.num_gpus=1") == (
        "error: toy: method lora on task toy asks for 1 GPU per cell (resources.num_gpus), but the largest node "
        "of the Ray cluster has 0 (0 on 1 node)")
    assert "asks for 3 CPUs per cell (resources.num_cpus), but the largest node of the Ray cluster has 2" in \
        error_of("--executor", "ray", "--set", "resources.num_cpus=3")
    assert "--jobs is for the local executor" in error_of("--executor", "ray", "--jobs", "2")
    assert "--address names a Ray cluster: it needs --executor ray" in error_of("--address", "auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    assert error_of("--executor", "ray") == \
        "error: --executor ray needs Ray, which is not installed: pip install 'peftbench[ray]' (or pip install ray)"
    assert not results.exists() or not [p for p in results.rglob("*") if p.is_file()]  # nothing ran


def test_lost_workers_and_nodes_are_told_from_a_task_that_raised() -> None:
    from ray import exceptions

    assert lost_reason(exceptions.WorkerCrashedError()) == "its Ray worker process died (killed, or out of memory?)"
    assert lost_reason(exceptions.NodeDiedError("node gone")).startswith("the Ray node running it died")
    assert lost_reason(exceptions.OutOfMemoryError("Task was killed due to the node running low on memory")) \
        .startswith("its Ray worker was killed by Ray's memory monitor")
    assert lost_reason(exceptions.TaskCancelledError()) is None
    assert lost_reason(RuntimeError("a bug")) is None


def test_the_local_path_never_imports_ray() -> None:
    code = ("import sys; from bench.cli import main; main(['ls']); import bench.api, bench.run.runner, "
            "bench.run.parallel; assert 'ray' not in sys.modules, 'ray was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
