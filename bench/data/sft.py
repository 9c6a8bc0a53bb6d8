"""Supervised fine-tuning data for causal LMs: (prompt, response) pairs, chat formatting, loss masks.

Each training row becomes ``prompt tokens + response tokens``; only response tokens carry
the loss. With a chat template the prompt is the rendered conversation up to and including
the assistant header (``add_generation_prompt=True``), and the response is the rest of the
rendered conversation up to and including the end-of-turn token: exactly the tokens the
model must produce when it is prompted the same way at inference. Prompt and response are
tokenised separately and concatenated, so the boundary (and the mask) is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.data.loaders import column, find_dataset, read_split
from bench.errors import BenchError
from bench.spec.generation import GenerationTaskSpec

#: Subsamples of SFT rows are drawn with this fixed seed (the same rows for every cell).
SFT_SUBSAMPLE_SEED = 20250101
#: Plain prompt format for tokenizers without a chat template (GSM8K's lm-eval format).
PLAIN_PROMPT = "Question: {prompt}\nAnswer:"


@dataclass(frozen=True)
class Pairs:
    """Prompts and responses with their source row ids."""

    prompts: list[str]
    responses: list[str]
    ids: NDArray[np.int64]

    def take(self, index: NDArray[np.int64]) -> Pairs:
        """The pairs at ``index`` (in that order)."""
        return Pairs([self.prompts[i] for i in index], [self.responses[i] for i in index], self.ids[index])


def row_pairs(rows: list[dict[str, Any]], spec: GenerationTaskSpec, where: str) -> tuple[list[str], list[str]]:
    """(prompts, responses) of rows in the task's ``format``."""
    if spec.format == "gsm8k":
        return [str(q).strip() for q in column(rows, "question", where)], [str(a).strip() for a in
                                                                           column(rows, "answer", where)]
    if spec.format == "alpaca":
        instructions, inputs = column(rows, "instruction", where), [r.get("input") or "" for r in rows]
        prompts = [f"{i.strip()}\n\n{x.strip()}" if x.strip() else i.strip() for i, x in zip(instructions, inputs,
                                                                                                strict=True)]
        return prompts, [str(o).strip() for o in column(rows, "output", where)]
    return ([str(p) for p in column(rows, spec.prompt_field, where)],
            [str(r) for r in column(rows, spec.response_field, where)])


def load_pairs(spec: GenerationTaskSpec, data_dir: Path) -> tuple[Pairs, Pairs]:
    """(train, validation) pairs: ``max_val`` rows held out, then ``max_train`` rows drawn (seeded).

    Raises:
        BenchError: missing data, missing fields, no non-empty response (rows with an empty
            response are skipped).
    """
    folder = find_dataset(spec.dataset, data_dir)
    rows = read_split(folder, spec.train_split)
    prompts, responses = row_pairs(rows, spec, f"{folder}/{spec.train_split}")
    if not any(r.strip() for r in responses):
        raise BenchError(f"{folder}/{spec.train_split}:1: empty response (every row's response is empty)")
    pairs = Pairs(prompts, responses, np.arange(len(rows), dtype=np.int64))
    order = np.random.default_rng(SFT_SUBSAMPLE_SEED).permutation(len(rows))
    # Rows with an empty response teach nothing (CodeAlpaca's 2k release has 2): they are left
    # out after the permutation, so data without any keeps exactly the rows it had.
    order = order[[bool(responses[i].strip()) for i in order]]
    n_val = min(spec.max_val, len(rows) // 5)
    train_order = order[n_val:][: spec.max_train] if spec.max_train else order[n_val:]
    return pairs.take(np.sort(train_order)), pairs.take(np.sort(order[:n_val]))


def _messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system is not None else []
    return [*head, {"role": "user", "content": prompt}]


def _ids(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def format_pair(tokenizer: Any, prompt: str, response: str, *, chat: bool = True,
                system: str | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one pair; the response ids end with the end-of-turn token.

    With ``chat`` and a tokenizer that has a chat template, the prompt is the conversation up
    to the assistant header and the response the rest of the rendered turn up to and including
    the first end-of-sequence token after the response (the template's trailing newline is
    not trained on). Otherwise the prompt is :data:`PLAIN_PROMPT` and the response
    ``" " + response + eos``.
    """
    eos = tokenizer.eos_token or ""
    if chat and getattr(tokenizer, "chat_template", None):
        messages = _messages(prompt, system)
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": response}],
                                             tokenize=False)
        if not full.startswith(head):
            raise BenchError("the chat template renders the prompt differently with and without the answer")
        tail = full[len(head):]
        found = tail.find(response)
        end = tail.find(eos, found + len(response) if found >= 0 else 0) if eos else -1
        tail = tail[: end + len(eos)] if end >= 0 else tail
        return _ids(tokenizer, head, special=False), _ids(tokenizer, tail, special=False)
    head = PLAIN_PROMPT.format(prompt=prompt)
    return _ids(tokenizer, head, special=True), _ids(tokenizer, " " + response + eos, special=False)


@dataclass(frozen=True)
class SftData:
    """Token ids of SFT sequences with a per-token target mask (True = carries the loss)."""

    input_ids: list[NDArray[np.int64]]
    target_masks: list[NDArray[np.bool_]]
    ids: NDArray[np.int64]
    n_truncated: int = 0
    """Sequences cut at ``max_length`` (their answer loses its end)."""

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_pairs(pairs: Pairs, tokenizer: Any, *, max_length: int, chat: bool = True,
                 system: str | None = None) -> SftData:
    """Tokenise pairs into :class:`SftData`; rows whose prompt fills ``max_length`` are dropped."""
    inputs, masks, kept, cut = [], [], [], 0
    for i, (prompt, response) in enumerate(zip(pairs.prompts, pairs.responses, strict=True)):
        head, tail = format_pair(tokenizer, prompt, response, chat=chat, system=system)
        ids = np.asarray(head + tail, dtype=np.int64)
        mask = np.r_[np.zeros(len(head), bool), np.ones(len(tail), bool)]
        if len(ids) > max_length:
            ids, mask, cut = ids[:max_length], mask[:max_length], cut + 1
        if mask.any():
            inputs.append(ids)
            masks.append(mask)
            kept.append(pairs.ids[i])
    if not inputs:
        raise BenchError(f"no training sequence keeps an answer token within max_length {max_length}")
    return SftData(inputs, masks, np.asarray(kept, dtype=np.int64), cut)


def target_labels(data: SftData, index: NDArray[np.int64], width: int) -> NDArray[np.int64]:
    """``labels`` for a right-padded batch: token ids where the mask is set, -100 elsewhere."""
    labels = np.full((len(index), width), -100, dtype=np.int64)
    for row, i in enumerate(index):
        ids, mask = data.input_ids[i], data.target_masks[i]
        labels[row, : len(ids)] = np.where(mask, ids, -100)
    return labels
