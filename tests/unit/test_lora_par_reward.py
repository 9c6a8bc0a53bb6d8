"""LoRA-PAR GSM8K reward: per-term table, gold answers from real GSM8K rows, TRL wrappers, NaN guard."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest

from bench.sdk import BenchError, CellError
from methods import lora_par_reward as lpr
from methods.lora_par_reward import (
    FORMAT_SYSTEM_PROMPT,
    TERMS,
    completion_text,
    extract_answer,
    gold_answer,
    gsm8k_rl_rows,
    total_reward,
    trl_reward_funcs,
)

NAMES = ["correctness", "integer", "strict_format", "soft_format", "tag_count"]
PERFECT = "<reasoning>\n48/2 = 24, 48 + 24 = 72\n</reasoning>\n<answer>\n72\n</answer>\n"

# (id, completion, gold, correctness, integer, strict_format, soft_format, tag_count, total)
# tag_count: +0.125 for each of "<reasoning>\n", "\n</reasoning>\n", "\n<answer>\n", "\n</answer>" found exactly once;
# in the "\n<answer>\n" branch -0.001 * len(text after the last "\n</answer>\n") (the whole text if absent);
# in the "\n</answer>" branch -0.001 * (len(text after the last "\n</answer>") - 1).
# fmt: off
TABLE: list[tuple[str, str, str, float, float, float, float, float, float]] = [
    # 4 * 0.125 = 0.5; after "\n</answer>\n": "" -> 0; after "\n</answer>": "\n" -> (1 - 1) = 0  => 0.5
    ("perfect", PERFECT, "72", 2.0, 0.5, 0.5, 0.5, 0.5, 4.0),
    # multi-line reasoning passes strict only because of re.DOTALL (as in the authors' example.py); tag as perfect
    ("multiline_reasoning", "<reasoning>\n48/2 = 24\n48 + 24 = 72\n</reasoning>\n<answer>\n72\n</answer>\n", "72",
     2.0, 0.5, 0.5, 0.5, 0.5, 4.0),
    # tag as perfect: 0.5
    ("wrong_number", PERFECT.replace("\n72\n", "\n71\n"), "72", 0.0, 0.5, 0.5, 0.5, 0.5, 2.0),
    # tag as perfect: 0.5
    ("non_integer", PERFECT.replace("\n72\n", "\n72.5\n"), "72.5", 2.0, 0.0, 0.5, 0.5, 0.5, 3.5),
    # "-47".isdigit() is False: a correct negative answer gets no integer reward (recipe behaviour); tag 0.5
    ("negative", PERFECT.replace("\n72\n", "\n-47\n"), "-47", 2.0, 0.0, 0.5, 0.5, 0.5, 3.5),
    # gold "1080" (from "#### 1,080"); the completion's comma is not removed; tag as perfect: 0.5
    ("answer_with_commas", PERFECT.replace("\n72\n", "\n1,080\n"), "1080", 0.0, 0.0, 0.5, 0.5, 0.5, 1.5),
    # none of the four newline-delimited tags occurs => 0
    ("missing_newlines", "<reasoning>48+24=72</reasoning><answer>72</answer>", "72", 2.0, 0.5, 0.0, 0.5, 0.0, 3.0),
    # "<reasoning>\n" +0.125, "\n</reasoning>\n" +0.125, "\n<answer>\n" absent (text starts "<answer>\n"),
    # "\n</answer>" +0.125 - (len("\n" + "<reasoning>\n" + "48+24=72" + "\n</reasoning>\n") - 1) * 0.001
    #   = 0.375 - (1 + 12 + 8 + 14 - 1) * 0.001 = 0.375 - 0.034 = 0.341
    ("tags_out_of_order", "<answer>\n72\n</answer>\n<reasoning>\n48+24=72\n</reasoning>\n", "72",
     2.0, 0.5, 0.0, 0.0, 0.341, 2.841),
    # 0.5 - len("Hope this helps!") * 0.001 - (len("\nHope this helps!") - 1) * 0.001 = 0.5 - 0.016 - 0.016 = 0.468
    ("trailing_text", PERFECT + "Hope this helps!", "72", 2.0, 0.5, 0.0, 0.5, 0.468, 3.468),
    # 0.5 - len("\n") * 0.001 - (len("\n\n") - 1) * 0.001 = 0.498; strict passes: "$" matches before a final "\n"
    ("extra_trailing_newline", PERFECT + "\n", "72", 2.0, 0.5, 0.5, 0.5, 0.498, 3.998),
    # "\n</answer>\n" absent, so the "\n<answer>\n" branch charges the whole text:
    #   len("<reasoning>\n" "x" "\n</reasoning>\n" "<answer>\n" "72" "\n</answer>") = 12+1+14+9+2+10 = 48;
    #   the "\n</answer>" branch: after it "" -> -(0 - 1) * 0.001 = +0.001;  0.5 - 0.048 + 0.001 = 0.453
    ("no_final_newline", "<reasoning>\nx\n</reasoning>\n<answer>\n72\n</answer>", "72",
     2.0, 0.5, 0.0, 0.5, 0.453, 3.453),
    # no tag occurs => 0
    ("empty", "", "72", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    # without an <answer> pair nothing is extracted (the recipe would extract "72" here) => all 0
    ("bare_number", "72", "72", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    # "<reasoning>\n" x2 -> 0, "\n</reasoning>\n" x2 -> 0, "\n<answer>\n" +0.125 - 0, "\n</answer>" +0.125 - 0 = 0.25;
    # strict still passes: with re.DOTALL the first ".*?" spans the repeated block
    ("duplicated_reasoning", "<reasoning>\na\n</reasoning>\n<reasoning>\nb\n</reasoning>\n<answer>\n72\n</answer>\n",
     "72", 2.0, 0.5, 0.5, 0.5, 0.25, 3.75),
    # "<reasoning>\n" +0.125, "\n</reasoning>\n" +0.125, "\n<answer>\n" x2 -> 0, "\n</answer>" x2 -> 0 = 0.25;
    # the last <answer> pair ("72") is the one scored
    ("duplicated_answer", "<reasoning>\nx\n</reasoning>\n<answer>\n70\n</answer>\n<answer>\n72\n</answer>\n", "72",
     2.0, 0.5, 0.5, 0.5, 0.25, 3.75),
    # "\n</answer>" absent; "\n<answer>\n" +0.125 - len(whole text) * 0.001 = 0.125 - (12+1+14+9+2) * 0.001;
    #   0.125 + 0.125 + 0.125 - 0.038 = 0.337
    ("unclosed_answer", "<reasoning>\nx\n</reasoning>\n<answer>\n72", "72", 0.0, 0.0, 0.0, 0.0, 0.337, 0.337),
    # leading newline: strict needs "^<reasoning>", soft strips first; all four tags still once, nothing after => 0.5
    ("leading_newline", "\n" + PERFECT, "72", 2.0, 0.5, 0.0, 0.5, 0.5, 3.5),
    # spaces inside the answer tags are stripped before comparing; tag as perfect: 0.5
    ("padded_answer", PERFECT.replace("\n72\n", "\n 72 \n"), "72", 2.0, 0.5, 0.5, 0.5, 0.5, 4.0),
]
# fmt: on


@pytest.mark.parametrize("case", TABLE, ids=[row[0] for row in TABLE])
def test_terms_and_total(case: tuple[str, str, str, float, float, float, float, float, float]) -> None:
    _, completion, gold, *expected, total = case
    got = [term(completion, gold) for _, term in TERMS]
    assert got == pytest.approx(expected, abs=1e-9)
    assert total_reward(completion, gold) == pytest.approx(total, abs=1e-9)
    assert total == pytest.approx(sum(expected), abs=1e-9)  # the table itself adds up


def test_terms_order_and_gold_free_signatures() -> None:
    assert [name for name, _ in TERMS] == NAMES
    assert lpr.integer(PERFECT) == lpr.strict_format(PERFECT) == lpr.soft_format(PERFECT) == 0.5
    assert lpr.tag_count(PERFECT) == pytest.approx(0.5)
    assert lpr.tag_count("x\n<answer>\n" + "y" * 600) < 0  # penalties can push it below zero


def test_extract_answer() -> None:
    assert extract_answer(PERFECT) == "72"
    assert extract_answer("<answer>1</answer> then <answer> 2 </answer>") == "2"
    assert extract_answer("<answer>1</answer> then <answer>2") == "1"  # last *complete* pair
    assert extract_answer("<answer>1<answer>2</answer>") == "2"
    assert extract_answer("<answer>\n3\n4\n</answer>") == "3\n4"
    assert extract_answer("no tags") == ""


# Verbatim GSM8K answers from ../shared/data/gsm8k/train.jsonl (lines 1, 2, 346 and 5845).
NATALIA = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)
WENG = (
    "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
    "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"
)
ADAM = (
    "The amount of money deducted from Adam's daily pay is $40 / 10 = $<<40/10=4>>4.\n"
    "So after deducting 10%, Adam’s daily pay is $40 – $4 = $<<40-4=36>>36.\n"
    "This means that in 30 days he earns $36 * 30 = $<<36*30=1080>>1080.\n#### 1,080"
)
NEGATIVE = (
    "Let N = smallest number\nN + 2 = next number\nN + 4 = largest number\nN + (N + 2) + (N + 4) = -147\n"
    "3N + 6 = -147\n3N = <<-153=-153>>-153\nN = -51\nThe largest number is <<-47=-47>>-47.\n#### -47"
)


@pytest.mark.parametrize(
    ("answer", "gold"),
    [(NATALIA, "72"), (WENG, "10"), (ADAM, "1080"), (NEGATIVE, "-47"), ("x\n#### $1,234", "1234"), ("#### 5 ", "5")],
)
def test_gold_answer(answer: str, gold: str) -> None:
    assert gold_answer(answer) == gold


@pytest.mark.parametrize("answer", ["Natalia sold 72 clips.", "", "#### ", "####"])
def test_gold_answer_rejects(answer: str) -> None:
    with pytest.raises(BenchError, match="####"):
        gold_answer(answer)


def test_gold_answer_then_perfect_completion_scores_full() -> None:
    gold = gold_answer(ADAM)
    assert total_reward(PERFECT.replace("\n72\n", f"\n{gold}\n"), gold) == pytest.approx(4.0)


def _batch() -> tuple[list[str], list[str]]:
    rows = [row for row in TABLE if row[0] in ("perfect", "wrong_number", "trailing_text", "empty")]
    return [row[1] for row in rows], [row[2] for row in rows]


def test_trl_wrappers_on_strings_and_conversations() -> None:
    funcs = trl_reward_funcs()
    assert [f.__name__ for f in funcs] == NAMES
    texts, golds = _batch()
    conversational = [[{"role": "assistant", "content": t}] for t in texts]
    prompts = [[{"role": "user", "content": "q"}]] * len(texts)
    for (name, term), func in zip(TERMS, funcs, strict=True):
        expected = [term(t, g) for t, g in zip(texts, golds, strict=True)]
        assert func(prompts, texts, golds) == expected
        extras: dict[str, Any] = {"completion_ids": [[1]] * len(texts), "trainer_state": None}
        assert func(prompts=prompts, completions=conversational, answer=golds, **extras) == expected, name
    assert trl_reward_funcs()[0](["p"] * 4, texts, golds) == [2.0, 0.0, 2.0, 0.0]


def test_trl_wrappers_pickle() -> None:
    funcs = pickle.loads(pickle.dumps(trl_reward_funcs()))
    assert [f.__name__ for f in funcs] == NAMES
    assert funcs[0](["p"], [PERFECT], ["72"]) == [2.0]


def test_completion_text_shapes() -> None:
    assert completion_text("abc") == "abc"
    messages = [
        {"role": "assistant", "content": "a"},
        {"role": "tool", "content": "x"},
        {"role": "assistant", "content": None},
        {"role": "assistant", "content": "b"},
    ]
    assert completion_text(messages) == "ab"
    assert completion_text([]) == ""
    for bad in [None, 3, [{"role": "assistant", "content": [{"type": "text"}]}], ["text"]]:
        with pytest.raises(CellError):
            completion_text(bad)


def test_trl_wrapper_length_mismatch() -> None:
    with pytest.raises(CellError, match="2 completions but 1 answers"):
        trl_reward_funcs()[0](["p", "p"], [PERFECT, PERFECT], ["72"])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("index", range(len(NAMES)))
def test_trl_wrapper_rejects_non_finite(monkeypatch: pytest.MonkeyPatch, index: int, bad: float) -> None:
    func = trl_reward_funcs()[index]
    monkeypatch.setattr(func, "term", lambda completion, gold: bad if "71" in completion else 0.0)
    texts, golds = _batch()
    with pytest.raises(CellError, match=f"reward {NAMES[index]} is not finite"):
        func(["p"] * len(texts), texts, golds)


def test_gsm8k_rl_rows() -> None:
    questions = [
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
        "How much did she earn?",
    ]
    rows = gsm8k_rl_rows(questions, [NATALIA, WENG])
    assert rows == [
        {"prompt": [{"role": "system", "content": FORMAT_SYSTEM_PROMPT}, {"role": "user", "content": q}], "answer": a}
        for q, a in zip(questions, ["72", "10"], strict=True)
    ]
    with pytest.raises(BenchError, match="2 questions but 1 answers"):
        gsm8k_rl_rows(questions, [NATALIA])
    with pytest.raises(BenchError):
        gsm8k_rl_rows(["q"], ["no final line"])


def test_system_prompt_asks_for_the_scored_layout() -> None:
    assert "<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n" in FORMAT_SYSTEM_PROMPT
