"""Helpers for causal-LM tests: a word-level tokenizer with a chat template, tiny data folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WORDS = ["<pad>", "<eos>", "<user>", "<bot>", "<sys>", "<unk>", "what", "is", "two", "plus", "four", "so", "####", "4",
         "Question:", "Answer:"]
#: Renders ``<user> text <eos> <bot> answer <eos>`` (and ``<sys> text <eos>`` first for a system message).
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<user>{% elif m['role'] == 'system' %}<sys>"
                 "{% else %}<bot>{% endif %} {{ m['content'] }} <eos> {% endfor %}"
                 "{% if add_generation_prompt %}<bot> {% endif %}")


def word_tokenizer(chat: bool = True) -> Any:
    """A whitespace word-level tokenizer over :data:`WORDS` (ids are the list positions)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # type: ignore[assignment]
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = CHAT_TEMPLATE if chat else None
    return tok


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def tiny_data_dir(root: Path, *, n_gsm8k: int = 12, n_mmlu: int = 8) -> Path:
    """A data dir with small gsm8k (train/test) and mmlu (dev/test) folders in the shared layout."""
    gsm = [{"question": f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?",
            "answer": f"He has {i} + {i + 2} = <<{i}+{i + 2}={2 * i + 2}>>{2 * i + 2} apples.\n#### {2 * i + 2}"}
           for i in range(n_gsm8k)]
    write_jsonl(root / "gsm8k" / "train.jsonl", gsm)
    write_jsonl(root / "gsm8k" / "test.jsonl", gsm[: max(2, n_gsm8k // 3)])
    subjects = ["abstract_algebra", "anatomy"]
    mmlu = [{"subject": subjects[i % 2], "question": f"What is {i} plus {i}?",
             "choices": [str(2 * i), str(2 * i + 1), str(i), str(3 * i + 1)], "answer": 0} for i in range(n_mmlu)]
    write_jsonl(root / "mmlu" / "test.jsonl", mmlu)
    write_jsonl(root / "mmlu" / "dev.jsonl", mmlu[:5])
    return root
