r"""LoRA-PAR's GRPO reward for GSM8K (METHODS.md §4.1 step 7): the sum of five terms.

The terms are those of the widely used GRPO GSM8K recipe (willccbb's ``grpo_demo``) as the
authors' ``example.py`` runs it [code]: ``correctness`` 2.0, ``integer`` 0.5, ``strict_format`` 0.5,
``soft_format`` 0.5, ``tag_count`` up to 0.5 (see :data:`TERMS`). Completions are expected in the
layout ``<reasoning>\n…\n</reasoning>\n<answer>\n…\n</answer>\n``.

Regexes (the exact ones used here):

* strict: ``re.match(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", text, re.DOTALL)``.
  ``re.DOTALL`` as in the authors' ``example.py`` (the original ``grpo_demo`` has no flag, which
  rejects multi-line reasoning). ``$`` without ``re.MULTILINE`` also matches before one final ``\n``.
* soft: ``re.match(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", text.strip(), re.DOTALL)``:
  anchored at the start only, trailing text allowed; ``strip`` and ``re.DOTALL`` as in ``example.py``.
* answer: ``re.match(r".*<answer>(.*?)</answer>", text, re.DOTALL)``: the last ``<answer>`` that a
  ``</answer>`` follows, up to the first ``</answer>`` after it, stripped. Unlike the recipe's
  ``extract_xml_answer`` (which returns the whole stripped text when the tags are missing), a
  completion without a closing pair gives ``""``.

``tag_count`` uses no regex: it is the recipe's ``count_xml`` verbatim, quirks included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from bench.sdk import BenchError, CellError

#: Our system prompt asking for the format the reward checks (the recipe's wording is not reused).
FORMAT_SYSTEM_PROMPT = (
    "Solve the problem. Think it through step by step inside the reasoning tags, then put only the "
    "final number inside the answer tags. Reply in exactly this layout:\n"
    "<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"
)

#: Whole-output layout with newlines (``re.match``, ``re.DOTALL``).
STRICT_FORMAT = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", re.DOTALL)
#: Tags in order, from the start of the stripped output (``re.match``, ``re.DOTALL``).
SOFT_FORMAT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
#: The last complete ``<answer>…</answer>`` pair (``re.match``, ``re.DOTALL``).
ANSWER = re.compile(r".*<answer>(.*?)</answer>", re.DOTALL)


def gold_answer(answer_text: str) -> str:
    """Return a GSM8K gold answer: the text after the last ``####``, without ``,`` and ``$``, stripped.

    Args:
        answer_text: a GSM8K ``answer`` field, ending with the ``#### N`` line.

    Returns:
        The final answer, e.g. ``"1080"`` for ``"... #### 1,080"``.

    Raises:
        BenchError: if the text has no ``####`` or nothing after it.
    """
    gold = answer_text.rpartition("####")[2].replace(",", "").replace("$", "").strip()
    if "####" not in answer_text or not gold:
        raise BenchError(f"GSM8K answer has no '#### N' line: {answer_text[-80:]!r}")
    return gold


def extract_answer(completion: str) -> str:
    """Return the stripped text inside the last ``<answer>…</answer>`` pair (regex :data:`ANSWER`), else ``""``.

    Args:
        completion: the model's output text.
    """
    match = ANSWER.match(completion)
    return match.group(1).strip() if match else ""


def correctness(completion: str, gold: str) -> float:
    """Return 2.0 if the extracted answer equals ``gold`` exactly (no normalisation), else 0.0.

    Args:
        completion: the model's output text.
        gold: the gold answer, as :func:`gold_answer` returns it.
    """
    return 2.0 if extract_answer(completion) == gold else 0.0


def integer(completion: str, gold: str = "") -> float:
    """Return 0.5 if the extracted answer is non-empty and all digits (``str.isdigit``), else 0.0.

    Args:
        completion: the model's output text.
        gold: unused (every term has the same signature).
    """
    return 0.5 if extract_answer(completion).isdigit() else 0.0


def strict_format(completion: str, gold: str = "") -> float:
    """Return 0.5 if the whole completion matches :data:`STRICT_FORMAT`, else 0.0.

    Args:
        completion: the model's output text.
        gold: unused (every term has the same signature).
    """
    return 0.5 if STRICT_FORMAT.match(completion) else 0.0


def soft_format(completion: str, gold: str = "") -> float:
    """Return 0.5 if the stripped completion starts with a :data:`SOFT_FORMAT` match, else 0.0.

    Args:
        completion: the model's output text.
        gold: unused (every term has the same signature).
    """
    return 0.5 if SOFT_FORMAT.match(completion.strip()) else 0.0


def tag_count(completion: str, gold: str = "") -> float:
    r"""Return the recipe's ``count_xml``: 0.125 per tag present exactly once, minus trailing-text penalties.

    Tags: ``<reasoning>\n``, ``\n</reasoning>\n``, ``\n<answer>\n``, ``\n</answer>``. Quirks kept from
    the recipe: the first penalty, 0.001 per character after the last ``\n</answer>\n``, is applied
    in the ``\n<answer>\n`` branch, so if ``\n</answer>\n`` is absent the whole text counts; the second,
    0.001 per character after the last ``\n</answer>`` minus one, gives +0.001 when the text ends
    right at ``\n</answer>``. The value is at most 0.5 and can be negative.

    Args:
        completion: the model's output text.
        gold: unused (every term has the same signature).
    """
    count = 0.0
    if completion.count("<reasoning>\n") == 1:
        count += 0.125
    if completion.count("\n</reasoning>\n") == 1:
        count += 0.125
    if completion.count("\n<answer>\n") == 1:
        count += 0.125
        count -= len(completion.split("\n</answer>\n")[-1]) * 0.001
    if completion.count("\n</answer>") == 1:
        count += 0.125
        count -= (len(completion.split("\n</answer>")[-1]) - 1) * 0.001
    return count


#: The five terms in METHODS.md's table order, as ``(name, term(completion, gold))``.
TERMS: tuple[tuple[str, Callable[[str, str], float]], ...] = (
    ("correctness", correctness),
    ("integer", integer),
    ("strict_format", strict_format),
    ("soft_format", soft_format),
    ("tag_count", tag_count),
)


def total_reward(completion: str, gold: str) -> float:
    """Return the LoRA-PAR reward: the sum of the five :data:`TERMS`.

    Args:
        completion: the model's output text.
        gold: the gold answer, as :func:`gold_answer` returns it.

    Returns:
        The sum, at most 4.0.
    """
    return sum(term(completion, gold) for _, term in TERMS)


def completion_text(completion: Any) -> str:
    """Return a completion's text: a string as is, or the joined ``content`` of a message list's assistant turns.

    Args:
        completion: a string, or a list like ``[{"role": "assistant", "content": "..."}]`` (``None`` content
            counts as ``""``).

    Raises:
        CellError: for any other shape.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and all(isinstance(m, dict) for m in completion):
        contents = [m.get("content") for m in completion if m.get("role", "assistant") == "assistant"]
        if all(c is None or isinstance(c, str) for c in contents):
            return "".join(c for c in contents if c is not None)
    raise CellError(f"reward: completion is neither a string nor a list of text messages: {completion!r:.200}")


class TrlReward:
    """One term as a TRL ``GRPOTrainer`` reward function; TRL logs ``rewards/<__name__>/mean`` per step.

    A callable class rather than a closure so that it pickles (TRL's async rollout workers need that).

    Attributes:
        term: the term, ``term(completion, gold) -> float``.
    """

    __name__: str

    def __init__(self, name: str, term: Callable[[str, str], float]) -> None:
        self.__name__ = name
        self.term = term

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str], **kwargs: Any
    ) -> list[float]:
        """Score a batch: one float per completion.

        Args:
            prompts: the prompts (unused).
            completions: strings or conversational completions (see :func:`completion_text`).
            answer: the gold answers (dataset column ``answer``), one per completion.
            **kwargs: other columns and TRL extras (unused).

        Raises:
            CellError: if the lengths differ, a completion has an unknown shape, or a value is NaN/inf.
        """
        if len(answer) != len(completions):
            raise CellError(f"reward {self.__name__}: {len(completions)} completions but {len(answer)} answers")
        values = [self.term(completion_text(c), str(g)) for c, g in zip(completions, answer, strict=True)]
        bad = [(i, v) for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise CellError(f"reward {self.__name__} is not finite for {len(bad)} completion(s), first: {bad[0]}")
        return values


def trl_reward_funcs() -> list[Callable[..., list[float]]]:
    """Return one TRL reward function per term, in :data:`TERMS` order (pass as ``reward_funcs``).

    Returns:
        ``TrlReward`` objects named ``correctness``, ``integer``, ``strict_format``, ``soft_format``, ``tag_count``.
    """
    return [TrlReward(name, term) for name, term in TERMS]


def gsm8k_rl_rows(questions: Sequence[str], answers: Sequence[str]) -> list[dict[str, Any]]:
    """Return GRPO rows ``{"prompt": [system, user], "answer": gold_answer(a)}`` (system: :data:`FORMAT_SYSTEM_PROMPT`).

    Args:
        questions: GSM8K ``question`` fields.
        answers: GSM8K ``answer`` fields (with the ``#### N`` line), one per question.

    Raises:
        BenchError: if the lengths differ or an answer has no ``####``.
    """
    if len(questions) != len(answers):
        raise BenchError(f"gsm8k_rl_rows: {len(questions)} questions but {len(answers)} answers")
    return [
        {
            "prompt": [{"role": "system", "content": FORMAT_SYSTEM_PROMPT}, {"role": "user", "content": q}],
            "answer": gold_answer(a),
        }
        for q, a in zip(questions, answers, strict=True)
    ]
