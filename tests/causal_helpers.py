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


def sft_ctx(model: str = "random:tiny-llama", *, epochs: int = 2, log: list[dict[str, Any]] | None = None,
            lr: float = 5e-3, prompts: list[str] | None = None, responses: list[str] | None = None,
            n_val: int = 4, max_length: int = 64, batch_size: int = 8) -> Any:
    """A generation FitContext, fp32 CPU: by default 24 "What is i plus i?" -> "2i" pairs, the first
    ``n_val`` of them also the validation set; ``prompts``/``responses`` replace the pairs."""
    import numpy as np
    import torch

    from bench.data.sft import Pairs, encode_pairs
    from bench.data.tokens import Encoded
    from bench.models.causal import causal_base, load_causal_tokenizer
    from bench.sdk.method import FitContext
    from bench.spec.suite import TrainConfig

    tokenizer = load_causal_tokenizer(model)
    prompts = prompts if prompts is not None else [f"What is {i} plus {i}?" for i in range(24)]
    responses = responses if responses is not None else [f"{2 * i}" for i in range(len(prompts))]
    pairs = Pairs(prompts, responses, np.arange(len(prompts)))
    train = encode_pairs(pairs, tokenizer, max_length=max_length)
    val = encode_pairs(Pairs(prompts[:n_val], responses[:n_val], np.arange(n_val)), tokenizer, max_length=max_length)
    base = causal_base(model, "fp32")
    rows = log if log is not None else []
    return FitContext(
        task="toy", kind="generation", label_names=[], new_model=base.new, tokenizer=tokenizer,
        train=Encoded(train.input_ids, np.zeros(len(train), np.int64), train.ids),
        val=Encoded(val.input_ids, np.zeros(len(val), np.int64), val.ids),
        train_config=TrainConfig(epochs=epochs, batch_size=batch_size, eval_batch_size=batch_size, lr=lr,
                                 warmup_ratio=0.1, precision="fp32"),
        seed=0, device=torch.device("cpu"), precision="fp32", log=rows.append, progress=None,
        train_texts=tuple(prompts[i] for i in train.ids), train_targets=tuple(train.target_masks),
        val_targets=tuple(val.target_masks), train_answers=tuple(responses[i] for i in train.ids),
    )
