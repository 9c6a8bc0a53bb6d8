"""SFT data: chat-template formatting, answer-only masks, truncation, pair loading, length grouping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.data.sft import Pairs, encode_pairs, format_pair, load_pairs, target_labels
from bench.errors import BenchError
from bench.sdk.loop import make_batches
from bench.spec.config import build
from bench.spec.generation import GenerationTaskSpec
from tests.causal_helpers import WORDS, word_tokenizer, write_jsonl

ID = {w: i for i, w in enumerate(WORDS)}


def test_chat_template_prompt_and_answer_ids_by_hand() -> None:
    tok = word_tokenizer()
    head, tail = format_pair(tok, "what is two plus two", "so four #### 4")
    # rendered: "<user> what is two plus two <eos> <bot> " + "so four #### 4 <eos> " (trailing space dropped)
    assert head == [ID["<user>"], ID["what"], ID["is"], ID["two"], ID["plus"], ID["two"], ID["<eos>"], ID["<bot>"]]
    assert tail == [ID["so"], ID["four"], ID["####"], ID["4"], ID["<eos>"]]


def test_system_prompt_goes_before_the_user_turn() -> None:
    head, _ = format_pair(word_tokenizer(), "two", "four", system="what is")
    assert head == [ID["<sys>"], ID["what"], ID["is"], ID["<eos>"], ID["<user>"], ID["two"], ID["<eos>"], ID["<bot>"]]


def test_plain_format_without_a_chat_template() -> None:
    head, tail = format_pair(word_tokenizer(chat=False), "two plus two", "four")
    # "Question: two plus two\nAnswer:" + " four<eos>" (the eos token splits off as a special token)
    assert head == [ID["Question:"], ID["two"], ID["plus"], ID["two"], ID["Answer:"]]
    assert tail == [ID["four"], ID["<eos>"]]
    head2, _ = format_pair(word_tokenizer(), "two", "four", chat=False)  # chat=False overrides a template
    assert head2 == [ID["Question:"], ID["two"], ID["Answer:"]]


def test_mask_covers_exactly_the_answer_and_labels_pad_with_ignore() -> None:
    tok = word_tokenizer()
    pairs = Pairs(["two plus two", "two"], ["four", "so four"], np.array([10, 11]))
    data = encode_pairs(pairs, tok, max_length=64)
    # item 0: 6 prompt tokens (<user> two plus two <eos> <bot>), then the answer: four <eos>
    assert data.input_ids[0].tolist() == [2, 8, 9, 8, 1, 3, 10, 1]
    assert data.target_masks[0].tolist() == [False] * 6 + [True, True]
    assert data.input_ids[1].tolist() == [2, 8, 1, 3, 11, 10, 1]
    assert data.target_masks[1].tolist() == [False] * 4 + [True] * 3
    labels = target_labels(data, np.array([1, 0]), width=8)
    assert labels.tolist() == [[-100] * 4 + [11, 10, 1, -100], [-100] * 6 + [10, 1]]
    assert data.ids.tolist() == [10, 11]


def test_truncation_cuts_the_answer_end_and_drops_rows_without_answer_tokens() -> None:
    tok = word_tokenizer()
    pairs = Pairs(["two plus two", "what is two plus two plus two"], ["so four #### 4", "four"], np.array([0, 1]))
    data = encode_pairs(pairs, tok, max_length=8)
    # row 0: 6 prompt + 5 answer tokens, cut to 8 (2 answer tokens kept); row 1: 10 prompt tokens, dropped
    assert len(data) == 1 and data.ids.tolist() == [0] and data.n_truncated == 2
    assert data.input_ids[0].tolist() == [2, 8, 9, 8, 1, 3, 11, 10]
    assert data.target_masks[0].tolist() == [False] * 6 + [True, True]
    with pytest.raises(BenchError, match="max_length"):
        encode_pairs(Pairs(["what is two plus two plus two"], ["four"], np.array([0])), tok, max_length=8)


def test_smollm2_chat_template_masks_only_the_assistant_turn() -> None:
    from bench.models.causal import load_causal_tokenizer

    tok = load_causal_tokenizer("smollm2")
    head, tail = format_pair(tok, "What is 2+2?", "2+2 = 4.\n#### 4")
    assert tok.decode(head) == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                                "Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert tail == tok("2+2 = 4.\n#### 4", add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids(
        "<|im_end|>")]


def _spec(**kwargs: object) -> GenerationTaskSpec:
    return build(GenerationTaskSpec, {"dataset": "sft", **kwargs}, "test")


def test_load_pairs_formats_and_holds_out_validation(tmp_path: Path) -> None:
    rows = [{"question": f"q{i} ", "answer": f"a{i}\n#### {i}", "instruction": f"do {i}",
             "input": "" if i % 2 else f"x{i}", "output": f"o{i}"} for i in range(20)]
    write_jsonl(tmp_path / "sft" / "train.jsonl", rows)
    train, val = load_pairs(_spec(max_val=4, max_train=10), tmp_path)
    assert len(val.prompts) == 4 and len(train.prompts) == 10
    assert not set(train.ids.tolist()) & set(val.ids.tolist())
    assert train.prompts[0] == f"q{train.ids[0]}" and train.responses[0].endswith(f"#### {train.ids[0]}")
    again, _ = load_pairs(_spec(max_val=4, max_train=10), tmp_path)
    assert again.ids.tolist() == train.ids.tolist()  # seeded, the same rows every time
    alpaca, _ = load_pairs(_spec(format="alpaca", max_val=0), tmp_path)
    assert alpaca.prompts[:2] == ["do 0\n\nx0", "do 1"] and alpaca.responses[1] == "o1"


def test_load_pairs_errors_name_the_row(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "sft" / "train.jsonl", [{"question": "q", "answer": " "}] * 6)
    with pytest.raises(BenchError, match="train:1: empty response"):
        load_pairs(_spec(), tmp_path)
    rows = [{"question": f"q{i}", "answer": "" if i in (2, 5) else f"a{i}"} for i in range(10)]
    write_jsonl(tmp_path / "sft" / "train.jsonl", rows)
    train, val = load_pairs(_spec(max_val=0), tmp_path)  # empty responses are skipped, the rest kept
    assert sorted(train.ids.tolist()) == [0, 1, 3, 4, 6, 7, 8, 9] and len(val.ids) == 0
    with pytest.raises(BenchError, match="no field 'prompt'"):
        load_pairs(_spec(format="fields"), tmp_path)


def test_sft_batches_are_length_grouped() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 400, size=256).astype(np.int64)
    grouped = make_batches(lengths, 8, rng=np.random.default_rng(1), group_by_length=True)
    plain = make_batches(lengths, 8, rng=np.random.default_rng(1), group_by_length=False)

    def padded(batches: list[np.ndarray]) -> int:
        return int(sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches))

    assert sorted(np.concatenate(grouped).tolist()) == list(range(256))
    # one mega-batch of 400 > 256 items: sorted by length, so each batch pads at most to its neighbours
    assert padded(grouped) < padded(plain) / 10
