"""Reading and tokenising a split: the harness's loader and token cache against ``datasets``.

The scale issue asks for the shared data layout to be loaded through ``datasets`` (JSON lines
into Arrow, memory-mapped, tokenised with its fingerprinted ``map`` cache) in place of the
harness's own reader and ``.npz`` token cache, unless it is slower on the smoke. This measures
both on the same files, in one run, each side in fresh processes (a cell runs in a fresh
process, so every import and every cache open is paid per cell):

- ``cold``: an empty cache (the first cell of a suite);
- ``warm``: the cache the cold run left (every later cell);
- ``import``: the side's imports alone (``bench.data.tokens`` or ``datasets``).

It also checks that both sides give the same token ids in the same order.

Command: ``OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.data_loading [--datasets trec ag_news]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from bench.data.loaders import find_dataset, resolve_data_dir, split_file
from bench.models.encoder import resolve

MAX_LENGTH = 128
REPEATS = 3

HARNESS = """
import sys, time
t0 = time.perf_counter()
from bench.data.loaders import read_split
from bench.data.tokens import tokenize
from transformers import AutoTokenizer
t1 = time.perf_counter()
tok = AutoTokenizer.from_pretrained(sys.argv[2])
t2 = time.perf_counter()
rows = read_split(__import__("pathlib").Path(sys.argv[6]), sys.argv[3])
ids = tokenize([r["text"] for r in rows], tok, int(sys.argv[4]))
t3 = time.perf_counter()
print(t1 - t0, t3 - t2, sum(int(x.sum()) for x in ids), len(ids))
"""

DATASETS = """
import sys, time
t0 = time.perf_counter()
import datasets
from transformers import AutoTokenizer
t1 = time.perf_counter()
tok = AutoTokenizer.from_pretrained(sys.argv[2])
t2 = time.perf_counter()
datasets.disable_progress_bars()
ds = datasets.load_dataset("json", data_files=sys.argv[1], split="train", cache_dir=sys.argv[5])
ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=int(sys.argv[4])), batched=True,
            remove_columns=[c for c in ds.column_names if c != "label"])
ids = ds["input_ids"]
t3 = time.perf_counter()
print(t1 - t0, t3 - t2, sum(sum(x) for x in ids), len(ids))
"""


def _run(code: str, args: list[str], env: dict[str, str]) -> tuple[float, float, int, int]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    imports, work, checksum, rows = out.stdout.split()
    return float(imports), float(work), int(checksum), int(rows)


def measure(name: str, split: str, tokenizer: str) -> dict[str, object]:
    """Cold and warm seconds per side for one split, median of :data:`REPEATS` fresh caches."""
    import os

    path = split_file(find_dataset(name, resolve_data_dir()), split)
    assert path is not None
    result: dict[str, object] = {"dataset": name, "split": split}
    sums = {}
    for side, code in (("harness", HARNESS), ("datasets", DATASETS)):
        cold, warm, imports = [], [], []
        for _ in range(REPEATS):
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "PEFTBENCH_CACHE": cache, "HF_DATASETS_CACHE": cache}
                args = [str(path), tokenizer, split, str(MAX_LENGTH), cache, str(path.parent)]
                i, c, checksum, rows = _run(code, args, env)
                _, w, _, _ = _run(code, args, env)
            cold.append(c)
            warm.append(w)
            imports.append(i)
        sums[side] = (checksum, rows)
        result[side] = {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm),
                        "import_s": statistics.median(imports), "rows": rows}
    result["same_tokens"] = sums["harness"] == sums["datasets"]
    return result


def main(argv: list[str] | None = None) -> None:
    """Measure every split of the named datasets; print a Markdown table and the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["trec", "ag_news"])
    args = parser.parse_args(argv)
    tokenizer = str(resolve("minilm")[1])
    rows = []
    start = time.perf_counter()
    for name in args.datasets:
        folder = find_dataset(name, resolve_data_dir())
        for split in ("train", "test"):
            if split_file(folder, split) is not None:
                rows.append(measure(name, split, tokenizer))
    print("| split | rows | harness cold s | harness warm s | harness import s "
          "| datasets cold s | datasets warm s | datasets import s | same tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        h, d = r["harness"], r["datasets"]
        assert isinstance(h, dict) and isinstance(d, dict)
        print(f"| {r['dataset']}/{r['split']} | {h['rows']} | {h['cold_s']:.3f} | {h['warm_s']:.3f} | "
              f"{h['import_s']:.2f} | {d['cold_s']:.3f} | {d['warm_s']:.3f} | {d['import_s']:.2f} | "
              f"{r['same_tokens']} |")
    print(json.dumps(rows))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
