"""Cell claims (bench.results.claims): two bench runs on one store split the grid (issue 19, item 16)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.results import claims
from bench.results.claims import claim_path, is_stale, release, try_claim
from tests.run_helpers import gone, toy_dataset, worker_pids

REPO = Path(__file__).resolve().parents[2]


def test_a_claim_is_exclusive_while_its_owner_lives(tmp_path: Path) -> None:
    path = claim_path(tmp_path / "suite" / "lora", "abc")
    assert try_claim(path) and path.name == ".abc.claim"
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert try_claim(path)                       # ours already (a requeued cell)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "since": time.time()}))
        assert not is_stale(path) and not try_claim(path)   # a live run on this host holds it
        release(path)                                       # not ours: left alone
        assert path.exists()
    finally:
        other.kill()
        other.wait()
    assert is_stale(path) and try_claim(path)               # its owner is gone: taken over
    release(path)
    assert not path.exists()


def test_foreign_and_unreadable_claims_go_stale_with_age(tmp_path: Path) -> None:
    path = tmp_path / ".x.claim"
    path.write_text(json.dumps({"pid": 1, "host": "another-machine", "since": 0}))
    assert not is_stale(path)
    old = time.time() - claims.FOREIGN_STALE_S - 10
    os.utime(path, (old, old))
    assert is_stale(path)
    path.write_text("")                                      # a writer killed before it wrote
    assert not is_stale(path)
    os.utime(path, (time.time() - 120, time.time() - 120))
    assert is_stale(path)


TOY = """name: toy
model: random:tiny-bert
tasks:
  toy: {dataset: toyds}
methods: {lora: {config: {r: 2, alpha: 4}}}
seeds: [0, 1, 2, 3]
train: {epochs: 2, batch_size: 8, precision: fp32}
"""


def test_two_runs_on_one_store_run_each_cell_once(tmp_path: Path) -> None:
    toy_dataset(tmp_path / "data", 48)
    suite = tmp_path / "toy.yaml"
    suite.write_text(TOY)
    results = tmp_path / "results"
    command = [sys.executable, "-m", "bench.cli", "run", "--suite", str(suite), "--data-dir", str(tmp_path / "data"),
               "--results-dir", str(results)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for _ in range(2)]
    outs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outs
    records = sorted(p.name for p in results.rglob("*.json"))
    assert len(records) == 4 and len(set(records)) == 4          # every cell once, nothing twice
    assert not list(results.rglob("*.claim")) and not list(results.rglob("*.tmp"))
    assert sum(o.count("accuracy") for o in outs) == 4, outs     # one success line per cell in all


def _workers(run: subprocess.Popen[bytes], within_s: float = 60.0) -> list[int]:
    """The run's worker processes, once there are any (empty if the run ended first)."""
    deadline = time.monotonic() + within_s
    while run.poll() is None and time.monotonic() < deadline:
        found = worker_pids(run.pid)
        if found:
            return found
        time.sleep(0.05)
    return []


def test_kill_9_of_the_parent_or_a_worker_loses_nothing(tmp_path: Path) -> None:
    # issue 19's kill test: kill -9 of the parent (twice), then of one worker (twice), each at a
    # random point while cells run; after each no process of the run is left and the store reads;
    # a final rerun completes every cell exactly once and leaves no claim, temp file or folder
    import random

    from bench.results.store import Store

    toy_dataset(tmp_path / "data", 48)
    suite = tmp_path / "toy.yaml"
    # 12 cells of 40 epochs, about 2 s each in a worker forked from the preloaded forkserver (a
    # spawned worker spent 4 s importing torch): the two parent trials must leave cells to run
    seeds = ", ".join(str(i) for i in range(12))
    suite.write_text(TOY.replace("seeds: [0, 1, 2, 3]", f"seeds: [{seeds}]").replace("epochs: 2", "epochs: 40"))
    results, scratch = tmp_path / "results", tmp_path / "tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "bench.cli", "run", "--suite", str(suite), "--data-dir", str(tmp_path / "data"),
               "--results-dir", str(results), "--jobs", "2", "--quiet"]
    env = {**os.environ, "TMPDIR": str(scratch)}
    rng = random.Random(0)
    for victim in ("parent", "parent", "worker", "worker"):
        run = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        workers = _workers(run)
        assert workers, f"{victim} trial: no worker started ({len(list(results.rglob('*.json')))} records stored)"
        time.sleep(rng.uniform(0.0, 1.0))  # a cell takes about 2 s
        workers = sorted({*workers, *_workers(run)})  # those running now, and those seen before
        if victim == "parent":
            run.kill()
            run.wait()
        else:
            current = _workers(run)  # between two cells there may be none for a moment
            assert current, "worker trial: the run ended before a worker could be killed"
            os.kill(rng.choice(current), 9)
            assert run.wait(timeout=300) in (0, 1)  # the dead worker's cell is stored as failed
        assert gone(workers), f"{victim} trial: workers {workers} outlived the run"
        Store(results).records("toy")  # every record file still parses
    final = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    successes = [p for p in results.rglob("*.json") if p.name.count(".") == 1]
    assert len(successes) == 12 and len({p.name for p in successes}) == 12
    assert not list(results.rglob("*.claim")) and not list(results.rglob("*.tmp"))
    assert not [p for p in scratch.iterdir() if p.name.startswith("peftbench-")]
