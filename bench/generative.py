"""Generation tasks in a suite: supervised fine-tuning data plus lm-eval evaluations.

A task with ``kind: generation`` trains a causal LM on instruction data (question → worked
answer, instruction → code) and is scored by lm-eval tasks kept in ``suites/lm_eval/``::

    tasks:
      gsm8k:
        kind: generation
        dataset: gsm8k          # SFT data: a folder of the shared layout
        format: gsm8k           # gsm8k | alpaca | fields (prompt_field -> response_field)
        max_train: 128
        evals:
          gsm8k: {task: gsm8k_local, num_fewshot: 5, max_items: 20, max_gen_toks: 256}
          mmlu_0shot: {task: mmlu_local, num_fewshot: 0, max_items: 100}

This module is free of torch so that suites validate (and ``bench ls`` runs) without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.config import build
from bench.errors import BenchError

FORMATS = ("gsm8k", "alpaca", "fields")
GENERATION = "generation"


@dataclass(frozen=True)
class EvalSpec:
    """One lm-eval evaluation of the fitted model (a task at one n-shot setting)."""

    task: str
    """lm-eval task name from ``suites/lm_eval/`` (e.g. ``gsm8k_local``, ``mmlu_local``)."""
    name: str = ""
    """Key of this evaluation in the record (defaults to the key in the suite)."""
    num_fewshot: int | None = None
    """Few-shot examples; None takes the task YAML's own ``num_fewshot`` (else 0)."""
    max_items: int | None = None
    """Score a deterministic subsample of this many test items (seeded, sorted); None: all."""
    max_gen_toks: int | None = None
    """Generation tasks: cap on new tokens (None: the task's ``generation_kwargs``)."""
    apply_chat_template: bool = False
    """Render prompts with the tokenizer's chat template (few-shot turns as a multi-turn chat)."""
    batch_size: int = 8
    """Requests per forward pass (HFLM ``batch_size``)."""

    def __post_init__(self) -> None:
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"Invalid max_items: {self.max_items}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ValueError(f"Invalid num_fewshot: {self.num_fewshot}")
        if self.batch_size < 1 or (self.max_gen_toks is not None and self.max_gen_toks < 1):
            raise ValueError("batch_size and max_gen_toks must be >= 1")


@dataclass(frozen=True)
class GenerationTaskSpec:
    """A causal-LM task: SFT data (answer tokens carry the loss) and the evaluations to run."""

    dataset: str
    """SFT data: a dataset folder under the data dir (``gsm8k``, ``codealpaca``) or a path."""
    kind: str = GENERATION
    name: str = ""
    """Display name (defaults to the key in the suite)."""
    format: str = "gsm8k"
    """How rows become (prompt, response): ``gsm8k`` (question → answer), ``alpaca``
    (instruction + input → output), ``fields`` (``prompt_field`` → ``response_field``)."""
    train_split: str = "train"
    """Split file holding the SFT rows (``train_2k`` for CodeAlpaca)."""
    prompt_field: str = "prompt"
    response_field: str = "response"
    max_train: int | None = None
    """Train on a deterministic subsample of this many rows (None: all)."""
    max_val: int = 32
    """Rows held out of the training pool for the per-epoch validation loss (0: none)."""
    max_length: int = 512
    """Token cap per training sequence (prompt + answer); longer answers are cut at the end."""
    chat_template: bool = True
    """Format SFT pairs with the tokenizer's chat template where it has one."""
    system_prompt: str | None = None
    """System message for the chat template (None: the template's default)."""
    evals: tuple[EvalSpec, ...] = ()
    """The lm-eval evaluations of the fitted model."""
    noise: None = None
    """Generation tasks take no label noise (kept for the grid's task × noise product)."""

    def __post_init__(self) -> None:
        if self.kind != GENERATION:
            raise ValueError(f"Invalid kind {self.kind!r} for a generation task")
        if self.format not in FORMATS:
            raise ValueError(f"Invalid format {self.format!r}: use one of {', '.join(FORMATS)}")
        if self.max_train is not None and self.max_train < 1:
            raise ValueError(f"Invalid max_train: {self.max_train}")
        if self.max_length < 8 or self.max_val < 0:
            raise ValueError("max_length must be >= 8 and max_val >= 0")
        names = [e.name for e in self.evals]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate evaluation names: {names}")


def is_generation(raw: Any) -> bool:
    """True for a raw task mapping that declares ``kind: generation``."""
    return isinstance(raw, dict) and raw.get("kind") == GENERATION


def build_generation_task(raw: dict[str, Any], where: str) -> GenerationTaskSpec:
    """Validate a raw generation-task mapping; ``evals`` is a mapping of name -> spec.

    Raises:
        BenchError: one line naming ``where`` and the problem.
    """
    data = dict(raw)
    evals = data.pop("evals", None) or {}
    if not isinstance(evals, dict):
        raise BenchError(f"{where}.evals: expected a mapping of name -> evaluation, got {evals!r}")
    built = []
    for key, entry in evals.items():
        entry = entry if isinstance(entry, dict) else {"task": entry}
        built.append(build(EvalSpec, {"name": str(key), **entry}, f"{where}.evals.{key}"))
    task = build(GenerationTaskSpec, data, where)
    try:
        return GenerationTaskSpec(**{**task.__dict__, "evals": tuple(built)})
    except ValueError as err:
        raise BenchError(f"{where}: {err}") from None
