"""LoRA training on one GPU: the harness's loop vs transformers' Trainer (tokens/s, memory, energy, MFU).

For the GPU machine (docs/gpu.md); only torch, transformers, peft and nvidia-ml-py are needed
there, and no file beyond this repository's ``bench/``, ``methods/`` and ``benchmarks/``::

    python -m benchmarks.gpu                          # 1B at 1024, then 8B at 1024 (the default)
    python -m benchmarks.gpu --shape 8b --seq 2048 --grad-ckpt on
    python -m benchmarks.gpu --shape tiny --seq 32 --device cpu --precision fp32 --peak-tflops 1

Random-weight Llama shapes built from a config on the device (``1b``: Llama-3.2-1B, ``8b``:
Llama-3.1-8B), bf16 weights and autocast, peft LoRA r=16 (alpha 32, dropout 0) on q, k, v, o,
gate, up and down projections, random token rows of ``--seq`` tokens, AdamW lr 2e-4, clip 1.0.
Per case each side builds its own fresh base (harness first, then Trainer; benchmarks/gpu_sides.py
says what each side runs) and trains ``--warmup-steps`` + ``--measure-steps`` optimizer steps.

Per side: tokens/s over the measured steps; torch peak allocated/reserved (``bench.run.profile.Phase``)
and NVML device memory used (peak of a 50 ms sampler thread); energy per token (NVML total-energy
counter delta over the measured steps / their tokens); and

    MFU = 6 * N_active * tokens_per_s / (peak_tflops * 1e12)

with N_active every parameter of the model (base + LoRA; a tied embedding once) and the device's
dense bf16 peak (H100 SXM and H200: 989.4 TFLOP/s; other devices need ``--peak-tflops``). 6N is
the usual full-training convention: LoRA skips the frozen weights' gradient GEMMs (about 2N of the
6N), and attention-score FLOPs are not counted, so this MFU is a model-FLOPs figure, not the
hardware's. A case that runs out of memory is rerun with gradient checkpointing (``--grad-ckpt auto``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.run.quiet import quiet_libraries
from benchmarks.gpu_sides import SHAPES, SIDES, Work, release, run_side, sane

#: Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's H100/H200 data sheets.
PEAK_TFLOPS = {"H100 SXM": 989.4, "H200 SXM": 989.4}
MFU_FORMULA = "mfu = 6 * n_active_params * tokens_per_s / (peak_tflops * 1e12)"
DEFAULT_SHAPES, DEFAULT_SEQS = ("1b", "8b"), (1024,)


def device_name(device: torch.device) -> str:
    """What ``torch.cuda.get_device_name`` says, or ``cpu``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def device_peak(name: str, override: float | None = None) -> tuple[float, str]:
    """(dense bf16 peak in TFLOP/s, where it comes from) for a device name.

    Known: H100 SXM (``NVIDIA H100 80GB HBM3``) and H200 (``NVIDIA H200``). PCIe and NVL parts
    (lower clocks and power) and everything else need ``override``.

    Raises:
        BenchError: for an unknown device without ``override``.
    """
    if override is not None:
        if not (math.isfinite(override) and override > 0):
            raise BenchError(f"Invalid --peak-tflops {override}: must be a positive number")
        return override, "--peak-tflops"
    upper = name.upper()
    other_part = any(tag in upper for tag in ("PCIE", "NVL", "GH200"))
    if "H200" in upper and not other_part:
        return PEAK_TFLOPS["H200 SXM"], "H200 SXM dense bf16"
    if "H100" in upper and ("HBM3" in upper or "SXM" in upper) and not other_part:
        return PEAK_TFLOPS["H100 SXM"], "H100 SXM dense bf16"
    raise BenchError(f"no known bf16 peak for device {name!r} (known: H100 SXM, H200): pass --peak-tflops")


def mfu(tokens_per_s: float, n_active_params: int, peak_tflops: float) -> float:
    """Model FLOPs utilisation by :data:`MFU_FORMULA`."""
    return 6.0 * n_active_params * tokens_per_s / (peak_tflops * 1e12)


def run_case(work: Work, device: torch.device, *, peak_tflops: float, sides: list[str],
             auto_ckpt: bool) -> dict[str, Any]:
    """Both sides on ``work``; out of memory without checkpointing and ``auto_ckpt``: again with it."""
    out: dict[str, Any] = {**asdict(work), "tokens_per_step": work.tokens_per_step, "lora": work.lora(),
                           "oom_retry": False, "error": None, "sides": {}}
    try:
        for side in sides:
            figures = run_side(side, work, device)
            figures["mfu"] = mfu(figures["tokens_per_s"], figures["n_active_params"], peak_tflops)
            figures["sane"] = sane(figures, work.total_steps)
            out["sides"][side] = figures
    except torch.OutOfMemoryError as err:
        out["error"] = f"out of memory on the {side} side: {str(err).splitlines()[0]}"
    if out["error"] is None:
        speeds = {k: v["tokens_per_s"] for k, v in out["sides"].items()}
        if {"harness", "trainer"} <= set(speeds):
            out["ratio_harness_over_trainer"] = speeds["harness"] / speeds["trainer"]
        return out
    release(device)  # outside the except block: the traceback no longer holds the tensors
    if auto_ckpt and not work.grad_ckpt:
        retry = run_case(replace(work, grad_ckpt=True), device, peak_tflops=peak_tflops, sides=sides,
                         auto_ckpt=False)
        return {**retry, "oom_retry": True, "first_error": out["error"]}
    return out


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def table(result: dict[str, Any]) -> str:
    """A Markdown table, one row per case and side, then the formula and the peak used."""
    lines = ["| case | side | tokens/s | MFU % | peak alloc GiB | peak reserved GiB | NVML used peak GiB "
             "| J/token | mean W | loss first -> last |", "|---|---|---|---|---|---|---|---|---|---|"]
    for case in result["cases"]:
        name = (f"{case['shape']} seq {case['seq']} x{case['batch_size']} r{case['rank']}"
                f"{' ckpt' if case['grad_ckpt'] else ''}")
        if case["error"] is not None:
            lines.append(f"| {name} | – | {case['error']} | | | | | | | |")
        for side, f in case["sides"].items():
            lines.append(
                f"| {name} | {side} | {_fmt(f['tokens_per_s'], ',.0f')} | {_fmt(100 * f['mfu'], '.1f')} "
                f"| {_fmt(f.get('phase_peak_gpu_allocated_gib'), '.1f')} "
                f"| {_fmt(f.get('phase_peak_gpu_reserved_gib'), '.1f')} | {_fmt(f['nvml_used_peak_gib'], '.1f')} "
                f"| {_fmt(f['energy_per_token_j'], '.4f')} | {_fmt(f['mean_power_w'], '.0f')} "
                f"| {f['loss_first']:.3f} -> {f['loss_last']:.3f} |")
    ratios = [f"{c['shape']}@{c['seq']}: {c['ratio_harness_over_trainer']:.2f}x" for c in result["cases"]
              if "ratio_harness_over_trainer" in c]
    lines.append(f"\n{result['mfu_formula']}; peak {result['peak_tflops']} TFLOP/s ({result['peak_source']}), "
                 f"device {result['device_name']}" + (f"; harness/Trainer tokens/s {', '.join(ratios)}"
                                                      if ratios else ""))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="LoRA on one GPU: harness loop vs Trainer (tokens/s, memory, MFU).")
    p.add_argument("--shape", action="append", choices=sorted(SHAPES), help="repeatable (default: 1b and 8b)")
    p.add_argument("--seq", action="append", type=int, help="tokens per row, repeatable (default: 1024)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per step (default: tokens-per-step / seq)")
    p.add_argument("--tokens-per-step", type=int, default=8192)
    p.add_argument("--rank", type=int, default=16, help="LoRA r (alpha = 2r)")
    p.add_argument("--warmup-steps", type=int, default=5, help="optimizer steps before the timed window")
    p.add_argument("--measure-steps", type=int, default=20, help="optimizer steps in the timed window")
    p.add_argument("--grad-ckpt", choices=["auto", "on", "off"], default="auto",
                   help="gradient checkpointing; auto: off, and on for a case that runs out of memory")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--side", action="append", choices=sorted(SIDES), help="repeatable (default: both)")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of an unlisted device")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: $OUT/gpu.json if $OUT is set)")
    args = p.parse_args(argv)
    if args.warmup_steps < 1 or args.measure_steps < 1:
        p.error("--warmup-steps and --measure-steps must be >= 1")
    if args.out is None and os.environ.get("OUT"):
        args.out = Path(os.environ["OUT"]) / "gpu.json"
    return args


def works(args: argparse.Namespace) -> list[Work]:
    """One :class:`Work` per (shape, seq) pair, in the order given."""
    out = []
    for shape in args.shape or DEFAULT_SHAPES:
        for seq in args.seq or DEFAULT_SEQS:
            batch = args.batch_size or max(1, args.tokens_per_step // seq)
            out.append(Work(shape=shape, seq=seq, batch_size=batch, warmup_steps=args.warmup_steps,
                            measure_steps=args.measure_steps, rank=args.rank, grad_ckpt=args.grad_ckpt == "on",
                            precision=args.precision, seed=args.seed))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every case, printing each as it ends and rewriting ``args.out`` after each (a cut run keeps its cases)."""
    from bench.run.env import environment

    device = torch.device(args.device)
    name = device_name(device)
    peak, source = device_peak(name, args.peak_tflops)  # refuse an unknown device before any work
    result: dict[str, Any] = {
        "schema": "peftbench-gpu/1", "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "device_name": name,
        "peak_tflops": peak, "peak_source": source, "mfu_formula": MFU_FORMULA, "env": environment(str(device)),
        "cases": []}
    start = time.perf_counter()
    for work in works(args):
        case = run_case(work, device, peak_tflops=peak, sides=args.side or list(SIDES),
                        auto_ckpt=args.grad_ckpt == "auto")
        case["elapsed_s"] = time.perf_counter() - start
        result["cases"].append(case)
        print(f"[{case['elapsed_s']:.0f} s] {work.shape} seq {work.seq} done", file=sys.stderr, flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the cases, print the table, write the JSON; 1 if a case failed or a side is not sane."""
    quiet_libraries()
    args = parse_args(argv)
    try:
        result = run(args)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table(result))
    if args.out is None:
        print("(no JSON written: pass --out or set $OUT)", file=sys.stderr)
    ok = all(c["error"] is None and all(s["sane"] for s in c["sides"].values()) for c in result["cases"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
