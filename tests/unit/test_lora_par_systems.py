"""LoRA-PAR step 1: the System-1/System-2 classifiers (heuristic, precomputed, random, vote) and the split."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import methods.lora_par_systems as lps
from bench.sdk import BenchError
from methods.lora_par_systems import (
    CLASSIFIERS,
    SYSTEM1,
    SYSTEM2,
    SystemSplit,
    agreement,
    balance,
    count_operations,
    heuristic_label,
    load_precomputed,
    random_labels,
    vote_labels,
)

S1, S2 = SYSTEM1, SYSTEM2

# Rows copied verbatim from ../shared/data/gsm8k/train.jsonl (row numbers in the comments).
GSM8K = [
    # row 186: 2 lines (2 sentences), one annotated step -> 1 operation; nothing reaches a threshold -> System1
    ("Christina has 3 snakes. 1 snake is 2 feet long. Another snake is 16 inches long. The last snake is 10 inches "
     "long. How many inches are all of her snakes combined?",
     "The first snake is 24 inches because there are 12 inches in a foot.\nThe snakes are 24+16+10= "
     "<<24+16+10=50>>50 inches long.\n#### 50", S1),
    # row 1964: 2 sentences, "2 * 3 = <<3*2=6>>6" is one annotated step -> 1 operation -> System1
    ("Maria goes to the coffee shop 2 times a day. Every time she goes to the coffee shop, she orders 3 cups of "
     "coffee. How many cups of coffee does she order per day?",
     "Maria goes to the coffee shop twice a day.\nIf she orders 3 cups of coffee each time she goes to the coffee "
     "shop, it means she orders 2 * 3 = <<3*2=6>>6 cups of coffee a day.\n#### 6", S1),
    # row 4440: 2 sentences, one annotation ("99/3=<<99/3=33>>33"; "1 banana" is no operation) -> System1
    ("Sherry is making banana bread for a bake sale. She wants to make 99 loaves. Her recipe makes enough batter for "
     "3 loaves. The recipe calls for 1 banana. How many bananas does Sherry need?",
     "Sherry needs to make 33 batches of banana bread to make enough loaves because 99/3=<<99/3=33>>33.\nTherefore, "
     "Sherry needs 33 bananas because there is 1 banana in each batch.\n#### 33", S1),
    # row 0: only 2 lines, but 2 annotations -> 2 operations -> System2
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips "
     "did Natalia sell altogether in April and May?",
     "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April "
     "and May.\n#### 72", S2),
    # row 4: 3 reasoning lines (the #### line is not counted) and 3 annotations -> System2 on both rules
    ("James writes a 3-page letter to 2 different friends twice a week.  How many pages does he write a year?",
     "He writes each friend 3*2=<<3*2=6>>6 pages a week\nSo he writes 6*2=<<6*2=12>>12 pages every week\nThat means "
     "he writes 12*52=<<12*52=624>>624 pages a year\n#### 624", S2),
    # row 339: no annotations, 2 lines, but two equations "44(.50)=22" and "22(.50)=11" -> 2 operations -> System2
    ("Terez has 44 cows on his farm.  50 percent of the cows are female, and 50 percent of the females are pregnant.  "
     "How many pregnant female cows does Terez have?",
     "Female:44(.50)=22\nPregnant:22(.50)=11 cows\n#### 11", S2),
    # row 32: one annotation + the unannotated equation "23 total meters – 13 calculated meters = 10" -> System2
    ("A car is driving through a tunnel with many turns. After a while, the car must travel through a ring that "
     "requires a total of 4 right-hand turns. After the 1st turn, it travels 5 meters. After the 2nd turn, it travels "
     "8 meters. After the 3rd turn, it travels a little further and at the 4th turn, it immediately exits the tunnel. "
     "If the car has driven a total of 23 meters around the ring, how far did it have to travel after the 3rd turn?",
     "From the details given, the car has traveled 5 meters at the 1st turn + 8 meters after the 2nd turn + 0 meters "
     "after the 4th turn = <<5+8+0=13>>13 meters around the ring.\nIt must therefore have driven 23 total meters "
     "\u2013 13 calculated meters = 10 meters after the 3rd turn.\n#### 10", S2),
    # row 135: 4 sentences over 3 lines (line 1 holds 2) and 3 equations without annotations -> System2
    ("Kennedy's house is 600 square feet larger than 4 times Benedict's house. If Kennedy's house is 10000 square "
     "feet, how many square feet is Benedict's house?",
     "Let the number of square feet in Benedict's house be x. So, we can write the equation 4 * x + 600 = 10000.\n"
     "Subtracting 600 from both sides we get 4 * x = 9400\nDividing both sides by 4 we get x = 2350 square feet.\n"
     "#### 2350", S2),
]


@pytest.mark.parametrize(("question", "answer", "expected"), GSM8K, ids=[f"gsm8k{i}" for i in range(len(GSM8K))])
def test_heuristic_on_gsm8k(question: str, answer: str, expected: str) -> None:
    assert heuristic_label(answer) == expected


@pytest.mark.parametrize(("text", "ops"), [
    ("3 + 4 = 7", 1),                                  # an equation outside annotations is one
    ("He sold 48/2 = <<48/2=24>>24 clips", 1),         # prose expression + its annotation: one
    ("<<2+2=4>> and <<4*3=12>>", 2),                   # each annotation is one
    ("a = b + 1 = 5", 2),                              # one per "=" in a chain
    ("She has 3 + 4 apples", 1),                       # an operation without "="
    ("She hit 2/5 of them", 0),                        # a bare fraction is no operation
    ("42 minutes + 10 minutes = 52 minutes", 1),       # unit words between operands
    ("The 3-page letter costs $5.", 0),
])
def test_count_operations(text: str, ops: int) -> None:
    assert count_operations(text) == ops


def test_heuristic_lines_sentences_and_code() -> None:
    assert heuristic_label("Paris is the capital. It is in France.\n#### Paris") == S1     # 2 sentences
    assert heuristic_label("Paris is the capital. It is in France. It is big.") == S2     # 3 sentences
    assert heuristic_label("One.\n\nTwo.\n#### 2\n#### 3") == S1                          # blank/#### lines ignored
    assert heuristic_label("It costs 0.2 dollars. That is all.") == S1                     # "0.2" does not split
    fence = "Here:\n```python\n" + "".join(f"x{i} = {i}\n" for i in range(6)) + "```"
    assert heuristic_label(fence) == S2                                                     # 6 fenced lines > 5
    assert heuristic_label(fence.replace("x5 = 5\n", "")) == S1                             # 5 lines: not longer
    plain = "def f(a):\n    b = a\n    c = b\n    d = c\n    e = d\n    return e"
    assert heuristic_label(plain) == S2                                                     # 6 unfenced code lines
    assert heuristic_label("\n".join(plain.splitlines()[:5])) == S1


def _write_csv(path: Path, rows: list[tuple[str, str, str]], header: tuple[str, ...] = ("question", "answer",
                                                                                           "_result")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_precomputed_csv_round_trip(tmp_path: Path) -> None:
    rows = [(q, a, lab) for q, a, lab in GSM8K]  # multi-line answers are quoted fields
    path = _write_csv(tmp_path / "labels.csv", [(f"  {q}\n", a, f" {lab}") for q, a, lab in rows[::-1]])
    questions = [q for q, _, _ in rows]
    assert load_precomputed(path, questions) == [lab for _, _, lab in rows]
    assert load_precomputed(path, [f"\t{questions[3]}  "]) == [rows[3][2]]


def test_precomputed_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps({"question": "q1", "_result": S2}) + "\n\n"
                    + json.dumps({"question": " q2 ", "system": S1, "answer": "a"}) + "\n")
    assert load_precomputed(path, ["q2", "q1", "q1"]) == [S1, S2, S2]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.csv", None, "not found"),
    ("labels.txt", "question,_result\nq1,System1\n", "must be .csv or .jsonl"),
    ("labels.jsonl", '{"question": "q1", "_result": "System1"}\n{not json\n', "cannot read"),
    ("labels.jsonl", '{"question": "q1", "label": "System1"}\n', "line 1 is not an object"),
    ("labels.jsonl", '["q1", "System1"]\n', "line 1 is not an object"),
    ("labels.csv", "question,label\nq1,System1\n", "needs columns question and _result"),
    ("labels.csv", "question,answer,_result\nq1,a,System3\n", "'System3' for 'q1' is not System1 or System2"),
    ("labels.csv", "question,answer,_result\nq1,a,\n", "is not System1 or System2"),
    ("labels.csv", "question,answer,_result\nq1,a,System1\nq1 ,b,System2\n", "labelled both"),
])
def test_precomputed_errors(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(BenchError, match=message) as err:
        load_precomputed(path, ["q1"])
    assert "\n" not in str(err.value)


def test_precomputed_missing_questions(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "labels.csv", [("q1", "a", S1)])
    long = "Natalia sold clips to 48 of her friends in April, and then\nshe sold half as many clips in May."
    with pytest.raises(BenchError) as err:
        load_precomputed(path, ["q1", long, "other"])
    text = str(err.value)
    assert "lacks 2 of 3 questions" in text and "\n" not in text
    assert "'Natalia sold clips to 48 of her friends in April, and the...'" in text  # 57 chars + "..." = 60


def test_random_labels_counts_and_determinism() -> None:
    assert random_labels(10, 0, 0.3).count(S2) == 3
    assert random_labels(7, 0).count(S2) == round(3.5) == 4
    assert random_labels(5, 1, 0.0) == [S1] * 5 and random_labels(5, 1, 1.0) == [S2] * 5
    assert random_labels(0, 0) == []
    assert random_labels(50, 3) == random_labels(50, 3) != random_labels(50, 4)
    order = np.random.default_rng(3).permutation(50)[:25]
    assert sorted(i for i, s in enumerate(random_labels(50, 3)) if s == S2) == sorted(order.tolist())
    with pytest.raises(BenchError, match="share"):
        random_labels(4, 0, 1.5)


def test_agreement_and_balance_by_hand() -> None:
    a, b, c = [S1, S1, S2, S2], [S1, S2, S2, S2], [S2, S2, S1, S2]
    # a-b agree on 0, 2, 3; a-c on 3; b-c on 1, 3
    assert agreement([a, b, c]) == {"0-1": 0.75, "0-2": 0.25, "1-2": 0.5}
    assert agreement([a]) == {} and agreement([]) == {}
    with pytest.raises(BenchError, match="one length"):
        agreement([a, b[:3]])
    assert balance(b) == {"n": 4, S1: 1, S2: 3, "share_System1": 0.25, "share_System2": 0.75}
    assert balance([]) == {"n": 0, S1: 0, S2: 0, "share_System1": 0.0, "share_System2": 0.0}
    with pytest.raises(BenchError, match="System1 or System2"):
        balance([S1, "fast"])


def test_system_split() -> None:
    split = SystemSplit.of([S2, S1, S2, S2], "vote:a,b", per_voter=[[S2, S1, S2, S2], [S2, S1, S1, S2]])
    assert split.labels == (S2, S1, S2, S2) and split.source == "vote:a,b"
    assert split.balance[S2] == 3 and split.agreement == {"0-1": 0.75}
    assert split.system1_index().dtype == np.int64 and split.system1_index().tolist() == [1]
    assert split.system2_index().dtype == np.int64 and split.system2_index().tolist() == [0, 2, 3]
    split.check()
    with pytest.raises(BenchError, match="has 1 System-1 samples, needs 2"):
        split.check(min_each=2)
    with pytest.raises(BenchError, match="no System-1 samples"):
        SystemSplit.of([S2, S2], "heuristic").check()
    with pytest.raises(BenchError, match="no System-2 samples"):
        SystemSplit.of([S1], "random:seed=0").check()
    assert SystemSplit.of([], "heuristic").system2_index().dtype == np.int64
    assert CLASSIFIERS == ("heuristic", "precomputed", "vote", "random")


def test_vote_majority_and_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    # Log-probabilities (System1, System2) per voter and question; equal scores count as System2.
    scores = {
        "a": [(-1, -2), (-1, -2), (-2, -1), (-1, -1)],   # S1 S1 S2 S2(tie)
        "b": [(-1, -2), (-2, -1), (-2, -1), (-1, -2)],   # S1 S2 S2 S1
        "c": [(-2, -1), (-1, -2), (-1, -2), (-1, -2)],   # S2 S1 S1 S1
    }
    seen: list[list[str]] = []

    def fake(model: Any, tokenizer: Any, prompts: list[str], *, device: Any, batch_size: int) -> Any:
        seen.append(list(prompts))
        return np.asarray(scores[model], dtype=np.float64)

    monkeypatch.setattr(lps, "score_options", fake)
    questions, answers = [f"q{i}" for i in range(4)], [f"a{i}" for i in range(4)]
    voters = [(name, None) for name in "abc"]
    final, per_voter = vote_labels(voters, questions, answers, device="cpu", calibrate=False)
    assert per_voter == [[S1, S1, S2, S2], [S1, S2, S2, S1], [S2, S1, S1, S1]]
    assert final == [S1, S1, S2, S1]  # 2-of-3 majorities
    assert len(seen) == 3 and "q2" in seen[0][2] and "a2" in seen[0][2] and "System1" in seen[0][2]
    final2, _ = vote_labels(voters[:2], questions, answers, device="cpu", calibrate=False)
    assert final2 == [S1, S2, S2, S2]  # 1-1 splits (questions 1 and 3) go to System2
    with pytest.raises(BenchError, match="at least one voter"):
        vote_labels([], questions, answers, device="cpu")
    with pytest.raises(BenchError, match="answers"):
        vote_labels(voters, questions, answers[:2], device="cpu")


def test_voter_prompt_without_chat_template() -> None:
    from tests.causal_helpers import word_tokenizer

    assert lps.voter_prompt(word_tokenizer(chat=False), "what is two") == "what is two\nAnswer:"
    chat = lps.voter_prompt(word_tokenizer(chat=True), "what is two")
    assert chat.startswith("<user> what is two <eos>") and chat.rstrip().endswith("Answer:")


def test_vote_real_forward_pass() -> None:
    import torch

    from bench.sdk import causal_base, load_causal_tokenizer

    tokenizer = load_causal_tokenizer("random:tiny-llama")
    voters = []
    for seed in range(3):
        model = causal_base("random:tiny-llama", "fp32").new()
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        voters.append((model, tokenizer))
    questions, answers, _ = zip(*GSM8K[:5], strict=True)
    final, per_voter = vote_labels(voters, list(questions), list(answers), device="cpu", batch_size=2)
    assert len(final) == 5 and len(per_voter) == 3 and all(len(v) == 5 for v in per_voter)
    assert set(final) | {lab for v in per_voter for lab in v} <= {S1, S2}
    for i, label in enumerate(final):  # the final label is the voters' majority
        assert label == (S2 if sum(v[i] == S2 for v in per_voter) >= 2 else S1)
    # left-padded batches score like one prompt at a time, and the scores are real log-probabilities
    model = voters[0][0]
    prompts = [lps.role_play_prompt(q, a) for q, a in zip(questions[:3], answers[:3], strict=True)]
    batched = lps.score_options(model, tokenizer, prompts, device="cpu", batch_size=3)
    single = lps.score_options(model, tokenizer, prompts, device="cpu", batch_size=1)
    assert batched.shape == (3, 2) and np.all(batched < 0)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4)
    text = lps.voter_prompt(tokenizer, prompts[0])
    ids = tokenizer(text + " System2", add_special_tokens=False, return_tensors="pt")["input_ids"]
    n = len(tokenizer(" System2", add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    manual = logp[-n:].gather(1, ids[0, -n:, None]).sum().item()
    assert batched[0, 1] == pytest.approx(manual, abs=1e-4)


def test_vote_calibrates_on_a_content_free_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    # A voter biased to System1: on the content-free pair it prefers System1 by 2 nats, so each
    # item's (s1, s2) becomes (s1 + 1, s2 + 3) after subtracting (-1, -3) (Zhao et al. 2021).
    item_scores = [(-1.0, -2.0), (-1.0, -4.0), (-2.0, -2.5)]  # raw: S1 S1 S1
    # calibrated: (0, 1) -> S2; (0, -1) -> S1; (-1, 0.5) -> S2

    def fake(model: Any, tokenizer: Any, prompts: list[str], *, device: Any, batch_size: int) -> Any:
        if len(prompts) == 1 and "N/A" in prompts[0]:
            return np.asarray([(-1.0, -3.0)])
        return np.asarray(item_scores[: len(prompts)])

    monkeypatch.setattr(lps, "score_options", fake)
    questions, answers = ["q0", "q1", "q2"], ["a0", "a1", "a2"]
    raw, _ = vote_labels([("m", None)], questions, answers, device="cpu", calibrate=False)
    calibrated, _ = vote_labels([("m", None)], questions, answers, device="cpu")
    assert raw == [S1, S1, S1] and calibrated == [S2, S1, S2]
