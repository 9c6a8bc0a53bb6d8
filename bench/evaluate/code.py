"""HumanEval on a fitted causal LM: batched generation with stop sequences, sandboxed scoring, record figures.

Generation continues each problem's prompt (signature and docstring) as plain text, as in Chen
et al. 2021: requests are sorted by prompt length (a problem's n samples side by side),
left-padded into batches, decoded greedily at temperature 0 and sampled otherwise under a
seeded torch RNG (forked, so the caller's RNG state is untouched). A stopping criterion ends a
row at the first HumanEval stop sequence and ``generate`` returns when every row has stopped;
:func:`bench.evaluate.humaneval.generate_completions` then cuts each completion at the stop.
Scoring is :func:`bench.evaluate.humaneval.score` only: every program runs in the sandbox, and
only when the run opted in (``bench run --allow-code-execution``).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from bench.errors import BenchError
from bench.evaluate.humaneval import (
    STOP_SEQUENCES,
    GenerateFn,
    HumanEvalScore,
    Problem,
    generate_completions,
    load_problems,
    score,
)
from bench.evaluate.lm_tasks import subsample
from bench.evaluate.sandbox import SandboxLimits
from bench.spec.generation import HumanEvalSpec

#: Generated tokens decoded at each step to look for a stop (the longest stop is 7 characters).
STOP_WINDOW = 16
#: With ``chat_template``: the user turn, and the start of the assistant turn the model continues.
CHAT_REQUEST = "Complete the following Python function.\n\n```python\n{prompt}```"
CHAT_ANSWER = "```python\n{prompt}"
#: With ``chat_template`` a code fence ends a body too (the base SmolLM2 often closes the fence at once).
CHAT_STOPS = (*STOP_SEQUENCES, "```")


def render_prompt(tokenizer: Any, prompt: str, *, chat: bool) -> list[int]:
    """Token ids of what the model continues: the prompt, or (``chat``) the chat turn ending in it."""
    if not chat or not getattr(tokenizer, "chat_template", None):
        return list(tokenizer(prompt)["input_ids"])
    head = tokenizer.apply_chat_template([{"role": "user", "content": CHAT_REQUEST.format(prompt=prompt)}],
                                         tokenize=False, add_generation_prompt=True)
    return list(tokenizer(head + CHAT_ANSWER.format(prompt=prompt), add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class CodeExecution:
    """The run's opt-ins (CLI flags; not part of a cell's identity: they change whether code runs)."""

    allowed: bool = False
    """``--allow-code-execution``: run model-written programs in the sandbox."""
    allow_unsafe_network: bool = False
    """``--allow-unsafe-network``: run them even where the kernel gives no namespaces (docs/sandbox.md)."""


@dataclass
class TokenMeter:
    """New (non-pad) tokens generated and seconds spent in ``generate``."""

    tokens: int = 0
    seconds: float = 0.0


class StopOnSequences(StoppingCriteria):
    """Per row: True once the text generated after the prompt contains a stop sequence."""

    def __init__(self, tokenizer: Any, prompt_width: int, stops: Sequence[str]) -> None:
        self.tokenizer, self.prompt_width, self.stops = tokenizer, prompt_width, tuple(stops)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """A bool per row: a stop sequence is in its newest generated text."""
        # A stop completes at the newest token, so it lies within the last few tokens; HF keeps
        # a row finished once it was, so earlier text need not be decoded again.
        start = max(self.prompt_width, input_ids.shape[1] - STOP_WINDOW)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in tails], device=input_ids.device)


def _generation_config(model: Any, tokenizer: Any, spec: HumanEvalSpec, pad: int) -> GenerationConfig:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None) or tokenizer.eos_token_id
    sampling = {"do_sample": True, "temperature": spec.temperature, "top_p": spec.top_p} if spec.temperature > 0 \
        else {"do_sample": False}
    return GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=spec.max_gen_toks, pad_token_id=pad, eos_token_id=eos, **sampling)


def _generate_batch(model: Any, tokenizer: Any, batch: Sequence[list[int]], config: GenerationConfig,
                    stops: Sequence[str], meter: TokenMeter) -> list[str]:
    """Left-pad ``batch`` (token ids), generate, return the decoded new text of each row."""
    pad, width = int(config.pad_token_id), max(len(ids) for ids in batch)
    device = next(model.parameters()).device
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids):] = 1
    start = time.perf_counter()
    out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config,
                         stopping_criteria=StoppingCriteriaList([StopOnSequences(tokenizer, width, stops)]))
    meter.seconds += time.perf_counter() - start
    new = out[:, width:]
    meter.tokens += int((new != pad).sum())
    return list(tokenizer.batch_decode(new, skip_special_tokens=True))


def make_generate_fn(model: Any, tokenizer: Any, spec: HumanEvalSpec, *, seed: int, meter: TokenMeter,
                     stops: Sequence[str] = STOP_SEQUENCES, progress: Any = None) -> GenerateFn:
    """A ``generate_fn(prompts, n)`` over ``model`` (a peft model included) for :func:`generate_completions`."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = _generation_config(model, tokenizer, spec, int(pad))

    def generate(prompts: list[str], n: int) -> list[list[str]]:
        encoded = [render_prompt(tokenizer, p, chat=spec.chat_template) for p in prompts]
        requests = [(i, j) for i in range(len(prompts)) for j in range(n)]
        order = sorted(range(len(requests)), key=lambda r: -len(encoded[requests[r][0]]))
        out = [[""] * n for _ in prompts]
        device = next(model.parameters()).device
        bar = progress(total=len(requests), desc=f"{spec.name or spec.task} generate", unit="sample",
                       leave=False) if progress else None
        model.eval()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(seed)
            for start in range(0, len(order), spec.batch_size):
                rows = order[start:start + spec.batch_size]
                texts = _generate_batch(model, tokenizer, [encoded[requests[r][0]] for r in rows], config,
                                        stops, meter)
                for r, text in zip(rows, texts, strict=True):
                    out[requests[r][0]][requests[r][1]] = text
                if bar is not None:
                    bar.update(len(rows))
        if bar is not None:
            bar.close()
        return out

    return generate


def select_problems(max_items: int | None) -> dict[str, Problem]:
    """The problems of a seeded, sorted subsample (the same for every cell), or all 164."""
    problems = load_problems()
    ids = list(problems)
    indices = subsample(len(ids), max_items)
    return {ids[i]: problems[ids[i]] for i in (indices if indices is not None else range(len(ids)))}


def per_problem(name: str, result: HumanEvalScore, completions: dict[str, list[str]]) -> dict[str, NDArray[Any]]:
    """Arrays for ``<run_id>.preds.npz``: problem number, and per sample passed / reason / completion."""
    tasks = list(completions)
    return {
        f"{name}_problem": np.asarray([int(t.rsplit("/", 1)[1]) for t in tasks], dtype=np.int64),
        f"{name}_passed": np.asarray([[r.passed for r in result.results[t]] for t in tasks], dtype=np.int8),
        f"{name}_reason": np.asarray([[r.reason for r in result.results[t]] for t in tasks], dtype=np.str_),
        f"{name}_completion": np.asarray([completions[t] for t in tasks], dtype=np.str_),
    }


def evaluate_humaneval(model: Any, tokenizer: Any, spec: HumanEvalSpec, *, seed: int, execution: CodeExecution,
                       progress: Any = None) -> dict[str, Any]:
    """Generate, score in the sandbox, and return record pieces.

    Returns:
        ``{"metrics": {pass_at_<k>..., n_items, n_samples}, "efficiency": {eval_<name>_gen_s,
        _exec_wall_s, _gen_tokens, _gen_tokens_per_s}, "reasons": {reason: count}, "arrays": {...},
        "gen_tokens": int, "gen_s": float}``.

    Raises:
        BenchError: without ``execution.allowed`` (before anything is generated), or when the
            sandbox refuses to run.
    """
    if not execution.allowed:
        raise BenchError(f"evaluation '{spec.name}' runs model-written code; pass --allow-code-execution "
                         "to run it in the sandbox (docs/sandbox.md)")
    problems, meter = select_problems(spec.max_items), TokenMeter()
    start = time.perf_counter()
    stops = CHAT_STOPS if spec.chat_template else STOP_SEQUENCES
    generate = make_generate_fn(model, tokenizer, spec, seed=seed, meter=meter, stops=stops, progress=progress)
    completions = generate_completions(generate, problems, spec.n_samples, stops)
    gen_s, start = time.perf_counter() - start, time.perf_counter()
    result = score(problems, completions, ks=spec.k, allow_code_execution=True, workers=min(2, os.cpu_count() or 1),
                   limits=SandboxLimits(timeout_s=spec.timeout_s), allow_unsafe_network=execution.allow_unsafe_network)
    exec_s, name = time.perf_counter() - start, spec.name
    reasons = Counter(r.reason for rs in result.results.values() for r in rs)
    efficiency = {f"eval_{name}_gen_s": gen_s, f"eval_{name}_exec_wall_s": exec_s,
                  f"eval_{name}_gen_tokens": float(meter.tokens),
                  f"eval_{name}_gen_tokens_per_s": meter.tokens / meter.seconds if meter.seconds else float("nan")}
    metrics = {**result.pass_at_k, "n_items": float(len(problems)), "n_samples": float(spec.n_samples)}
    return {"metrics": metrics, "efficiency": efficiency, "reasons": dict(sorted(reasons.items())),
            "arrays": per_problem(name, result, completions), "gen_tokens": meter.tokens, "gen_s": meter.seconds}
