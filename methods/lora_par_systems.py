"""LoRA-PAR step 1 (METHODS.md §4.1): the pluggable System-1 / System-2 data classifier.

Each training pair is labelled ``System1`` (recall, reading, one-step inference) or ``System2``
(multi-step reasoning) by ``precomputed`` labels (the authors' CSV), a ``vote`` of local causal LMs
role-playing the target model, a ``heuristic`` on the answer [proposed], or ``random`` (the paper's
control). :class:`SystemSplit` keeps the labels with their source, class balance and agreement.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bench.sdk import BenchError

SYSTEM1 = "System1"
SYSTEM2 = "System2"
SYSTEMS = (SYSTEM1, SYSTEM2)
CLASSIFIERS = ("heuristic", "precomputed", "vote", "random")
#: The continuations a voter scores after its prompt (log-probability, not free generation).
OPTIONS = (" System1", " System2")

_ANNOTATION = re.compile(r"<<[^<>\n]*>>")
_NUMBER = r"(?:\d+(?:[,.]\d+)*|\.\d+)"
#: A number (``1,000``, ``.5``, ``40%``, ``$6``, ``2p``, ``42 minutes``, ``7 containers/week``) or a single letter.
_OPERAND = rf"\(*(?<![\w$.])\$?(?:{_NUMBER}[a-zA-Z]?(?!\w)%?(?:[ \t]+(?!x\b)[a-zA-Z][\w/']*){{0,2}}|[a-zA-Z](?!\w))\)*"
_OPERATOR = r"[ \t]*(?:[-+*/×÷^=–]|x(?=[ \t]*[\d($.]))[ \t]*"
_FRACTION = re.compile(rf"\(*{_NUMBER}/{_NUMBER}\)*(?:[ \t]+[a-zA-Z][\w/']*){{0,2}}")
#: A run of operands joined by operators (``3 + 4 = 7``, ``2p/5``, ``100% - 40%``).
_CHAIN = re.compile(rf"{_OPERAND}(?:{_OPERATOR}{_OPERAND})+")
#: A GSM8K calculator step: the prose expression, ``=``, and its ``<<a+b=c>>`` annotation.
_ANNOTATED_STEP = re.compile(rf"(?:{_OPERAND}(?:{_OPERATOR}{_OPERAND})*\s*)?=?\s*\$?<<[^<>\n]*>>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CODE_LINE = re.compile(r"^(?:def |class |return\b|import |from \S+ import |(?:for|while|if|elif|with) .*:$|else:$"
                        r"|try:$|except\b.*:$|print\(|#include|function |(?:var|let|const) \w+ ?=|public |private "
                        r"|static |SELECT |INSERT |[{}])|[;{]$")


def _answer_parts(answer: str) -> tuple[list[str], int]:
    """Split an answer into prose lines and a code-line count, dropping blank and ``####`` lines."""
    prose: list[str] = []
    code, fenced = 0, False
    for raw in answer.splitlines():
        line = raw.strip()
        if line.startswith("```"):
            fenced = not fenced
        elif not line or line.startswith("####"):
            continue
        elif fenced or _CODE_LINE.search(line) or raw.startswith(("    ", "\t")):
            code += 1
        else:
            prose.append(line)
    return prose, code


def count_operations(text: str) -> int:
    """Arithmetic operations in prose: one per ``<<…>>`` annotation plus one per equation outside them.

    Each annotation counts once, together with the ``expr =`` written before it (GSM8K's
    ``48/2 = <<48/2=24>>24`` is one operation). In the rest, every run of operands joined by
    operators on one line counts one per ``=`` it holds (``3 + 4 = 7`` is one, ``a = b + 1 = 5``
    two), or one if it has no ``=`` (``3 + 4 apples``), except a bare fraction (``2/5 of them``).
    Operands are numbers (``1,000``, ``.5``, ``40%``, ``$6``, ``2p``) with up to two unit words
    (``42 minutes + 10 minutes = 52``) or single letters; ``x`` before a number is multiplication.
    """
    chains: list[str] = _CHAIN.findall(_ANNOTATED_STEP.sub(" ", text))
    counted = [c.count("=") or 1 for c in chains if "=" in c or not _FRACTION.fullmatch(c)]
    return len(_ANNOTATION.findall(text)) + sum(counted)


def heuristic_label(answer: str, *, min_steps: int = 3, min_operations: int = 2) -> str:
    """Label one pair by its reference answer (METHODS.md §4.1 (c), proposed, not the paper's).

    Counting rules: the final ``#### N`` line and blank lines are ignored. Code lines are the
    non-blank lines inside a ``` fence, lines indented by a tab or four spaces, and lines that look
    like code (``def``/``class``/``return``/``import``/``if …:`` …, a lone brace, or ending in ``;``
    or ``{``). Every other line is prose. Reasoning steps are the sentences of the prose lines
    (a line is split after ``.``/``!``/``?`` followed by whitespace, so ``0.2`` does not split).
    Operations are :func:`count_operations` on the prose.

    Args:
        answer: The reference answer (GSM8K: steps, then ``#### N``).
        min_steps: Reasoning steps that make System 2 (METHODS.md: 3).
        min_operations: Operations that make System 2 (METHODS.md: 2). On the GSM8K train split
            (7,473 answers) 3 / 2 label 0.2 % System 1 and 5 / 4 label 54.9 % (measured).

    Returns:
        ``System2`` if there are ≥ ``min_steps`` reasoning steps, ≥ ``min_operations`` operations
        or > 5 code lines, else ``System1``.
    """
    prose, code = _answer_parts(answer)
    steps = sum(len([s for s in _SENTENCE_END.split(line) if s.strip()]) for line in prose)
    operations = count_operations("\n".join(prose))
    return SYSTEM2 if steps >= min_steps or code > 5 or operations >= min_operations else SYSTEM1


def _short(text: str, limit: int = 60) -> str:
    return flat if len(flat := " ".join(text.split())) <= limit else flat[: limit - 3] + "..."


def _read_rows(path: Path) -> list[tuple[str, str]]:
    """(question, label) rows of a CSV (``question, answer, _result``) or JSONL file (``_result`` or ``system``)."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
        if suffix == ".csv":
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if not {"question", "_result"} <= set(reader.fieldnames or ()):
                raise ValueError(f"needs columns question and _result, has {reader.fieldnames}")
            return [(row["question"] or "", row["_result"] or "") for row in reader]
        if suffix in (".jsonl", ".ndjson"):
            objs = [(number, json.loads(line)) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
            bad = [n for n, o in objs if not (isinstance(o, dict) and "question" in o and {"_result", "system"} & {*o})]
            if bad:
                raise ValueError(f"line {bad[0]} is not an object with question and _result (or system)")
            return [(str(o["question"]), str(o.get("_result", o.get("system")))) for _, o in objs]
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as err:
        raise BenchError(f"cannot read System-1/2 labels from {path}: {_short(str(err), 120)}") from err
    raise BenchError(f"System-1/2 label file {path} must be .csv or .jsonl, not '{suffix or path.name}'")


def load_precomputed(path: Path, questions: Sequence[str]) -> list[str]:
    """Labels from a file, matched to ``questions`` by the question text stripped of surrounding whitespace.

    Args:
        path: A CSV with columns ``question, answer, _result`` (as the authors' code) or a JSONL
            file whose objects have ``question`` and ``_result`` (or ``system``).
        questions: The training questions, in order; the result holds one label per question.

    Raises:
        BenchError: The file is missing or unreadable, holds a label other than System1/System2
            or two different labels for one question, or lacks some of ``questions``.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"System-1/2 label file not found: {path}")
    table: dict[str, str] = {}
    for question, raw in _read_rows(path):
        label, key = raw.strip(), question.strip()
        if label not in SYSTEMS:
            raise BenchError(f"{path}: label '{_short(label)}' for '{_short(key)}' is not System1 or System2")
        if table.setdefault(key, label) != label:
            raise BenchError(f"{path}: question '{_short(key)}' is labelled both System1 and System2")
    missing = [q for q in questions if q.strip() not in table]
    if missing:
        raise BenchError(f"{path} lacks {len(missing)} of {len(questions)} questions, first: '{_short(missing[0])}'")
    return [table[q.strip()] for q in questions]


def random_labels(n: int, seed: int, share_system2: float = 0.5) -> list[str]:
    """The random-partition control: exactly ``round(n * share_system2)`` System2 labels at seeded positions."""
    if n < 0 or not 0.0 <= share_system2 <= 1.0:
        raise BenchError(f"random System-1/2 split needs n >= 0 and 0 <= share <= 1, got {n}, {share_system2}")
    chosen = set(np.random.default_rng(seed).permutation(n)[: round(n * share_system2)].tolist())
    return [SYSTEM2 if i in chosen else SYSTEM1 for i in range(n)]


def role_play_prompt(question: str, answer: str, target: str = "a small language model") -> str:
    """Our paraphrase of the paper's role-play request (the original is only shown as an image)."""
    return (f"Imagine you are {target} that is about to learn from the example below. Put yourself in its "
            "place and judge how it would have to think to produce the reference answer.\n"
            "System1: the answer comes from immediate recall, straightforward reading or a simple inference.\n"
            "System2: the answer needs multi-step reasoning that chains several pieces of information.\n\n"
            f"Question: {question}\nReference answer: {answer}\n\n"
            "Reply with one word, System1 or System2.")


def voter_prompt(tokenizer: Any, message: str) -> str:
    """The voter's prompt text: the chat template with the assistant turn begun as ``Answer:``, if it has one."""
    if not getattr(tokenizer, "chat_template", None):
        return f"{message}\nAnswer:"
    chat = [{"role": "user", "content": message}, {"role": "assistant", "content": "Answer:"}]
    return str(tokenizer.apply_chat_template(chat, tokenize=False, continue_final_message=True))


def _encode_rows(tokenizer: Any, prompts: Sequence[str]) -> list[tuple[list[int], int]]:
    """(prompt + option ids, option token count) per prompt and option, tokenized jointly with the prompt."""
    special = not getattr(tokenizer, "chat_template", None)  # a rendered template already has its specials
    rows = []
    for message in prompts:
        text = voter_prompt(tokenizer, message)
        head = list(tokenizer(text, add_special_tokens=special)["input_ids"])
        for option in OPTIONS:
            ids = list(tokenizer(text + option, add_special_tokens=special)["input_ids"])
            common = next((i for i, (a, b) in enumerate(zip(head, ids, strict=False)) if a != b), len(head))
            rows.append((ids, max(1, len(ids) - common)))
    return rows


@torch.no_grad()
def score_options(model: Any, tokenizer: Any, prompts: Sequence[str], *, device: torch.device | str,
                  batch_size: int = 8) -> NDArray[np.float64]:
    """Log-probabilities ``[n, 2]`` of :data:`OPTIONS` after each prompt (left-padded batches, no sampling)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    trim = "logits_to_keep" in inspect.signature(model.forward).parameters
    model.to(device).eval()
    rows, scores = _encode_rows(tokenizer, prompts), []
    for start in range(0, len(rows), 2 * batch_size):
        batch = rows[start: start + 2 * batch_size]
        width, keep = max(len(ids) for ids, _ in batch), max(n for _, n in batch) + 1
        ids = torch.tensor([[pad] * (width - len(s)) + s for s, _ in batch], device=device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s, _ in batch], device=device)
        extra = {"logits_to_keep": keep} if trim else {}
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0), **extra)
        logp = torch.log_softmax(logits.logits[:, -keep:].float(), dim=-1)
        for row, (seq, n) in enumerate(batch):
            target = torch.tensor(seq[-n:], device=logp.device)
            scores.append(logp[row, keep - 1 - n: keep - 1].gather(1, target[:, None]).sum().item())
    return np.asarray(scores, dtype=np.float64).reshape(-1, len(OPTIONS))


def vote_labels(voters: Sequence[Any], questions: Sequence[str], answers: Sequence[str], *,
                device: torch.device | str, batch_size: int = 8, target: str = "a small language model",
                calibrate: bool = True) -> tuple[list[str], list[list[str]]]:
    """Role-play vote of local causal LMs (METHODS.md §4.1 (b)).

    Each voter scores the continuations " System1" and " System2" after :func:`role_play_prompt`
    and picks the likelier (equal scores: System2); the majority of voters decides, ties System2.
    With ``calibrate`` each voter's scores are first shifted by its scores on a content-free
    pair (question and answer "N/A"; Zhao et al. 2021): SmolLM2-135M uncalibrated called all 32
    of the first GSM8K training pairs System1 (measured).

    Args:
        voters: ``(model, tokenizer)`` pairs of transformers causal LMs (each model is moved to ``device``).
        questions: The training questions.
        answers: Their reference answers, aligned with ``questions``.
        device: Where the voters run.
        batch_size: Prompts per forward pass (each is scored with both options).
        target: Whom the voters role-play (the paper: LLaMA-2-7B).
        calibrate: Subtract each voter's option scores on the content-free pair.

    Returns:
        (final labels, per-voter labels).
    """
    if not voters:
        raise BenchError("the System-1/2 vote needs at least one voter model")
    if len(questions) != len(answers):
        raise BenchError(f"vote got {len(questions)} questions but {len(answers)} answers")
    prompts = [role_play_prompt(q, a, target) for q, a in zip(questions, answers, strict=True)]
    per_voter = []
    for model, tokenizer in voters:
        scores = score_options(model, tokenizer, prompts, device=device, batch_size=batch_size)
        if calibrate:
            scores = scores - score_options(model, tokenizer, [role_play_prompt("N/A", "N/A", target)],
                                            device=device, batch_size=1)[0]
        per_voter.append([SYSTEM2 if s2 >= s1 else SYSTEM1 for s1, s2 in scores])
    final = [SYSTEM2 if 2 * votes.count(SYSTEM2) >= len(voters) else SYSTEM1 for votes in zip(*per_voter, strict=True)]
    return final, per_voter


def agreement(per_voter: list[list[str]]) -> dict[str, float]:
    """Share of samples on which voters ``i < j`` agree, keyed ``"i-j"`` (NaN for no samples)."""
    if len({len(labels) for labels in per_voter}) > 1:
        raise BenchError(f"agreement needs label lists of one length, got {[len(v) for v in per_voter]}")
    out = {}
    for i, left in enumerate(per_voter):
        for j in range(i + 1, len(per_voter)):
            same = sum(a == b for a, b in zip(left, per_voter[j], strict=True))
            out[f"{i}-{j}"] = same / len(left) if left else float("nan")
    return out


def balance(labels: Sequence[str]) -> dict[str, Any]:
    """``{"n", "System1", "System2", "share_System1", "share_System2"}`` of a label list."""
    unknown = sorted(set(labels) - set(SYSTEMS))
    if unknown:
        raise BenchError(f"labels must be System1 or System2, got {unknown[:3]}")
    n = len(labels)
    counts = {s: sum(label == s for label in labels) for s in SYSTEMS}
    return {"n": n, **counts, **{f"share_{s}": counts[s] / n if n else 0.0 for s in SYSTEMS}}


@dataclass(frozen=True)
class SystemSplit:
    """The System-1/2 labels of a training set, their source (classifier name, plus file or voter names) and stats."""

    labels: tuple[str, ...]
    source: str
    balance: dict[str, Any] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, labels: Sequence[str], source: str, per_voter: list[list[str]] | None = None) -> SystemSplit:
        """Build a split, computing its balance and (for votes) the pairwise agreement."""
        return cls(tuple(labels), source, balance(labels), agreement(per_voter or []))

    def system1_index(self) -> NDArray[np.int64]:
        """Positions of the System-1 samples."""
        return np.asarray([i for i, s in enumerate(self.labels) if s == SYSTEM1], dtype=np.int64)

    def system2_index(self) -> NDArray[np.int64]:
        """Positions of the System-2 samples."""
        return np.asarray([i for i, s in enumerate(self.labels) if s == SYSTEM2], dtype=np.int64)

    def check(self, min_each: int = 1) -> None:
        """Raise :class:`BenchError` unless each system has at least ``min_each`` samples."""
        for name, index in (("System-1", self.system1_index()), ("System-2", self.system2_index())):
            if len(index) == 0:
                raise BenchError(f"LoRA-PAR split ({self.source}) has no {name} samples of {len(self.labels)}")
            if len(index) < min_each:
                raise BenchError(f"LoRA-PAR split ({self.source}) has {len(index)} {name} samples, needs {min_each}")
