"""Parity: the harness's in-process lm-eval scoring vs lm-eval's own CLI on the same resolved task YAMLs.

    python -m benchmarks.lm_eval_parity --task mmlu_local --num-fewshot 0 --max-items 100

scores the base model (default: the embedded SmolLM2, bf16) twice on the same seeded
subsample: once through :func:`bench.evaluate.generation.evaluate_model` (``HFLM`` over the
in-memory model), once with ``lm_eval run --model hf`` in a subprocess that loads the
converted model folder itself. It prints both sets of metrics (calibration for multiple-choice
tasks computed from each side's logged samples) and how many per-item results differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.data.loaders import resolve_data_dir
from bench.evaluate.bias_probes import probe_items, probe_metrics, probe_of
from bench.evaluate.lm_tasks import count_test_items, resolve_tasks, subsample
from bench.spec.generation import EvalSpec


def harness(model_name: str, spec: EvalSpec, data_dir: Path) -> tuple[dict[str, float], list[dict[str, Any]], float]:
    """Metrics, samples and seconds of the harness's evaluation of the base model."""
    from bench.evaluate.generation import evaluate_model
    from bench.models.causal import causal_base, load_causal_tokenizer

    model = causal_base(model_name, "bf16").new()
    start = time.perf_counter()
    out = evaluate_model(model, load_causal_tokenizer(model_name), [spec], data_dir, quiet=True)
    samples = out["results"][spec.name]["samples"][spec.task]
    return out["evals"][spec.name], samples, time.perf_counter() - start


def direct(folder: Path, spec: EvalSpec, data_dir: Path) -> tuple[dict[str, float], list[dict[str, Any]], float]:
    """Metrics, samples and seconds of ``lm_eval run`` on the same resolved tasks (a subprocess)."""
    from bench.evaluate.generation import LM_EVAL_SEEDS, SOFTMAX_DTYPE, calibration

    tasks_dir = resolve_tasks([spec.task], data_dir)
    indices = subsample(count_test_items(spec.task, data_dir), spec.max_items)
    seeds = ",".join(str(LM_EVAL_SEEDS[k]) for k in ("random_seed", "numpy_random_seed", "torch_random_seed",
                                                     "fewshot_random_seed"))
    with tempfile.TemporaryDirectory(prefix="peftbench-parity-") as tmp:
        model_args = f"pretrained={folder},dtype=bfloat16,softmax_dtype={SOFTMAX_DTYPE}"
        command = [str(Path(sys.executable).parent / "lm_eval"), "run", "--model", "hf", "--model_args", model_args,
                   "--device", "cpu", "--include_path", str(tasks_dir), "--tasks", spec.task,
                   "--batch_size", str(spec.batch_size), "--seed", seeds, "--log_samples", "--output_path", tmp]
        if spec.num_fewshot is not None:
            command += ["--num_fewshot", str(spec.num_fewshot)]
        if indices is not None:
            command += ["--samples", json.dumps({spec.task: [int(i) for i in indices]})]
        if spec.max_gen_toks:
            command += ["--gen_kwargs", f"max_gen_toks={spec.max_gen_toks}"]
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        results = json.loads(next(Path(tmp).rglob("results_*.json")).read_text())
        samples = [json.loads(line) for f in Path(tmp).rglob(f"samples_{spec.task}_*.jsonl")
                   for line in f.read_text().splitlines() if line.strip()]
    metrics = {}
    for key, value in results["results"][spec.task].items():
        if "," in key and "_stderr" not in key and isinstance(value, (int, float)):
            metric, filt = key.split(",", 1)
            metrics[metric if filt == "none" else f"{metric}_{filt.replace('-', '_')}"] = float(value)
    probe = probe_of(results["configs"][spec.task])
    if probe is not None:  # a bias probe: the same metric functions over the CLI's logged samples
        metrics.update(probe_metrics(probe, probe_items(probe, samples)))
    elif results["configs"][spec.task].get("output_type") == "multiple_choice":
        metrics.update(calibration(samples))
    return metrics, samples, seconds


def _value(resp: Any) -> Any:
    """A logged response, comparable across sides: the CLI's JSON writes (loglik, greedy) pairs as strings."""
    if isinstance(resp, (list, tuple)):
        return float(str(resp[0])) if resp and not isinstance(resp[0], (list, tuple)) else [_value(r) for r in resp]
    return str(resp)


def _per_item(samples: list[dict[str, Any]]) -> dict[tuple[int, str], Any]:
    return {(int(s["doc_id"]), str(s.get("filter", "none"))): [_value(r) for r in s["filtered_resps"]]
            if isinstance(s["filtered_resps"], list) else _value(s["filtered_resps"]) for s in samples}


def main(argv: list[str] | None = None) -> int:
    """Run both sides and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True,
                        help="lm-eval task from suites/lm_eval (gsm8k_local, mmlu_local, crows_pairs_local, ...)")
    parser.add_argument("--num-fewshot", type=int, default=None)
    parser.add_argument("--max-items", type=int, default=None)
    parser.add_argument("--max-gen-toks", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="smollm2", help="embedded name or HF folder")
    args = parser.parse_args(argv)
    from bench.models.causal import embedded_folder, resolve_causal
    from bench.run.quiet import quiet_libraries

    quiet_libraries()
    data_dir = resolve_data_dir(None)
    spec = EvalSpec(task=args.task, name=args.task, num_fewshot=args.num_fewshot, max_items=args.max_items,
                    max_gen_toks=args.max_gen_toks, batch_size=args.batch_size)
    kind, location = resolve_causal(args.model)
    folder = embedded_folder(str(location)) if kind == "embedded" else Path(location)
    ours, our_samples, our_s = harness(args.model, spec, data_dir)
    theirs, their_samples, their_s = direct(folder, spec, data_dir)
    a, b = _per_item(our_samples), _per_item(their_samples)
    differ = sum(1 for key in a if a[key] != b.get(key))
    print(f"task {args.task}, {args.num_fewshot}-shot, {int(ours.get('n_items', 0))} items")
    numeric = {k for k, v in {**ours, **theirs}.items() if isinstance(v, (int, float))}
    for key in sorted(numeric):
        nan = float("nan")
        print(f"  {key:32s} harness {ours.get(key, nan):.6f}   lm_eval CLI {theirs.get(key, nan):.6f}")
    print(f"  per-item responses differing: {differ} of {len(a)} (CLI logged {len(b)})")
    print(f"  wall: harness {our_s:.1f} s (model in memory), lm_eval CLI {their_s:.1f} s (incl. model load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
