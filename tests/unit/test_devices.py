"""GPU assignment of local workers (bench.run.devices): worker k gets GPU k mod n, never GPU 0 by default."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run.devices import gpu_for, physical_gpu, visible_gpus, worker_env
from bench.run.parallel import CellPool


def test_visible_gpus_come_from_cuda_visible_devices_or_the_count() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": " 5 , 7 "}) == ["5", "7"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}) == ["GPU-aa", "GPU-bb"]
    # CUDA stops at the first invalid entry; empty or -1 hides every GPU
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_gpus({}, count=3) == ["0", "1", "2"]
    assert visible_gpus({}, count=0) == []


def test_worker_k_gets_gpu_k_mod_n() -> None:
    gpus = ["2", "3"]
    assert [gpu_for(k, gpus) for k in range(5)] == ["2", "3", "2", "3", "2"]
    assert [gpu_for(k, ["0", "1", "2", "3"]) for k in range(4)] == ["0", "1", "2", "3"]
    assert gpu_for(3, ["6"]) == "6"
    assert gpu_for(0, []) is None
    with pytest.raises(ValueError):
        gpu_for(-1, gpus)


def test_worker_env_names_its_gpu_and_threads() -> None:
    assert worker_env(1, 4, ["2", "3"]) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4",
                                             "CUDA_VISIBLE_DEVICES": "3"}
    assert "CUDA_VISIBLE_DEVICES" not in worker_env(0, 1, [])  # no GPUs: the variable is left alone


def test_physical_gpu_maps_a_workers_cuda0_to_nvml() -> None:
    # a worker started with CUDA_VISIBLE_DEVICES=3 sees GPU 3 as cuda:0; NVML calls it 3
    assert physical_gpu(0, {"CUDA_VISIBLE_DEVICES": "3"}) == "3"
    assert physical_gpu(1, {"CUDA_VISIBLE_DEVICES": "4,6"}) == "6"
    assert physical_gpu(0, {"CUDA_VISIBLE_DEVICES": "GPU-aa"}) == "GPU-aa"
    assert physical_gpu(2, {}) == "2"
    with pytest.raises(ValueError, match="not visible"):
        physical_gpu(1, {"CUDA_VISIBLE_DEVICES": "3"})


def report_env(item: str, data_dir: Path) -> tuple[dict[str, Any], float]:
    """A cell function: what the worker's environment says before torch touches CUDA."""
    return {"item": item, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "threads": os.environ.get("OMP_NUM_THREADS"), "pid": os.getpid()}, 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="spawned workers; Linux CI")
def test_workers_start_with_their_gpu_in_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # the parent's view: worker k gets entry k mod 2
    pool = CellPool(list("abc"), tmp_path, jobs=2, fn=report_env, threads=1)
    outcomes = {item: result for item, result, _ in pool.results()}
    assert {o["gpu"] for o in outcomes.values()} <= {"5", "7"}
    assert outcomes["a"]["gpu"] == "5" and outcomes["b"]["gpu"] == "7"  # slots 0 and 1
    assert {o["threads"] for o in outcomes.values()} == {"1"}
    assert len({o["pid"] for o in outcomes.values()}) == 3  # a fresh process per cell
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,7"  # the parent's own view is left as it was


def test_workers_fork_from_the_preloading_forkserver_without_gpus_and_spawn_with_them() -> None:
    # a forkserver that imported torch could have started CUDA before a worker's CUDA_VISIBLE_DEVICES
    from bench.run.worker import PRELOAD, worker_context

    assert worker_context(["0", "1"]).get_start_method() == "spawn"
    forked = worker_context([])
    assert forked.get_start_method() == "forkserver" and PRELOAD == ["bench.run.preload"]


def report_start(item: str, data_dir: Path) -> tuple[dict[str, Any], float]:
    """A cell function: the environment variable, directory and stderr a worker started with."""
    print(f"worker {item} on stderr", file=sys.stderr, flush=True)
    return {"value": os.environ.get("PEFTBENCH_TEST_VALUE"), "cwd": os.getcwd()}, 0.0


def test_a_forked_worker_starts_as_a_spawned_one_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    # the forkserver's own environment, directory and fds are those of the moment it started; a
    # worker must see the parent's as they are when the worker starts
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    list(CellPool(["warm"], tmp_path, jobs=1, fn=report_start, threads=1, gpus=[]).results())  # forkserver up
    monkeypatch.setenv("PEFTBENCH_TEST_VALUE", "set after the forkserver started")
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    ((_, result, _),) = list(CellPool(["x"], tmp_path, jobs=1, fn=report_start, threads=1, gpus=[]).results())
    assert result == {"value": "set after the forkserver started", "cwd": str(tmp_path)}
    assert "worker x on stderr" in capfd.readouterr().err
