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
from typing import Any, ClassVar

from bench.errors import BenchError
from bench.spec.config import build

FORMATS = ("gsm8k", "alpaca", "fields")
GENERATION = "generation"
#: The ``task:`` of an evaluation that samples code and runs it in the sandbox (not an lm-eval task).
HUMANEVAL = "humaneval"


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
class HumanEvalSpec:
    """HumanEval (Chen et al. 2021): sample completions of the 164 function bodies, run them in the sandbox.

    Defaults follow the paper's pass@1 setting (greedy, one sample); pass@10 and pass@100 are
    usually estimated from n >= k samples at temperature 0.2 / 0.8 with nucleus p = 0.95.
    """

    task: str = HUMANEVAL
    """Always ``humaneval``."""
    name: str = ""
    """Key of this evaluation in the record (defaults to the key in the suite)."""
    n_samples: int = 1
    """Completions per problem (the n of the unbiased pass@k estimator)."""
    temperature: float = 0.0
    """0: greedy decoding (then ``n_samples`` must be 1); > 0: sampling at this temperature."""
    top_p: float = 0.95
    """Nucleus sampling mass (used only when sampling)."""
    k: tuple[int, ...] = (1,)
    """The k of pass@k to report; each at most ``n_samples``."""
    max_items: int | None = None
    """Score a deterministic subsample of this many problems (seeded, sorted); None: all 164."""
    max_gen_toks: int = 512
    """Cap on new tokens per completion (generation also stops at the stop sequences)."""
    batch_size: int = 8
    """Completions generated at once (left-padded)."""
    timeout_s: float = 5.0
    """Wall-clock limit per program in the sandbox."""
    chat_template: bool = False
    """False: continue the prompt as plain text (Chen et al. 2021). True (instruct models): a user
    turn asks to complete the function and the assistant turn starts with a Python code fence
    followed by the prompt, so the model still writes only the body; the closing fence also stops."""

    def __post_init__(self) -> None:
        if self.task != HUMANEVAL:
            raise ValueError(f"Invalid task {self.task!r} for a HumanEval evaluation")
        if self.n_samples < 1 or self.batch_size < 1 or self.max_gen_toks < 1:
            raise ValueError("n_samples, batch_size and max_gen_toks must be >= 1")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"Invalid max_items: {self.max_items}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.timeout_s <= 0:
            raise ValueError(f"Invalid temperature {self.temperature}, top_p {self.top_p} "
                             f"or timeout_s {self.timeout_s}")
        if self.temperature == 0 and self.n_samples > 1:
            raise ValueError(f"n_samples {self.n_samples} with temperature 0: greedy samples are identical; "
                             "sample with temperature > 0")
        if not self.k or any(not 1 <= k <= self.n_samples for k in self.k):
            raise ValueError(f"Invalid k {list(self.k)}: each k must be between 1 and n_samples ({self.n_samples})")


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
    evals: tuple[EvalSpec | HumanEvalSpec, ...] = ()
    """The evaluations of the fitted model: lm-eval tasks and HumanEval."""
    noise: None = None
    """Generation tasks take no label noise (kept for the grid's task × noise product)."""

    KIND: ClassVar[str] = GENERATION
    """The task kind that runs it (:mod:`bench.kinds`)."""

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
        kind = HumanEvalSpec if entry.get("task") == HUMANEVAL else EvalSpec
        built.append(build(kind, {"name": str(key), **entry}, f"{where}.evals.{key}"))
    task = build(GenerationTaskSpec, data, where)
    try:
        return GenerationTaskSpec(**{**task.__dict__, "evals": tuple(built)})
    except ValueError as err:
        raise BenchError(f"{where}: {err}") from None


def code_evals(tasks: Any) -> list[str]:
    """``<task>.<eval>`` of every evaluation among ``tasks`` that executes model-written code."""
    return [f"{t.name}.{e.name}" for t in tasks if isinstance(t, GenerationTaskSpec)
            for e in t.evals if isinstance(e, HumanEvalSpec)]


def require_code_execution(suite_name: str, tasks: Any, *, allowed: bool) -> None:
    """Refuse a suite whose evaluations run model-written code unless the run opted in.

    Raises:
        BenchError: one line naming the evaluations and the flag.
    """
    found = code_evals(tasks)
    if found and not allowed:
        raise BenchError(f"suite '{suite_name}' runs model-written code ({', '.join(found)}); pass "
                         "--allow-code-execution to run it in the sandbox (docs/sandbox.md)")
