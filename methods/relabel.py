"""Relabelers for samples a detector flags as noisy (METHODS.md §0.4 ``Relabeler``, §2.1 stage 2).

- ``clean-lora``: the detector's own clean-LoRA prediction (Delora's default offline);
- ``drop``: no new labels; the flagged samples leave the training set;
- ``file``: precomputed labels, JSONL lines ``{"id": <example id>, "value": <label index or name>}``;
- ``model``: zero-shot with a causal LM (the embedded ``smollm2``, an HF folder, or a hub name
  where downloads are on): the label whose name has the highest log-likelihood after a
  classification prompt.

The paper's GPT-4o relabelling is not available offline; results with ``clean-lora`` are
"Delora (self-relabel)" (METHODS.md §2.5 point 5).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bench.sdk import CellError, FitContext

RELABELERS = ("clean-lora", "drop", "file", "model")

PROMPT = "Classify the text into one of these categories: {labels}.\nText: {text}\nCategory:"
#: Contextual calibration (Zhao et al., "Calibrate Before Use", ICML 2021): each label's score on
#: this content-free text is subtracted, which removes a small LM's preference for one label name
#: (SmolLM2-135M put three clear texts of three topics all in the first-listed label without it).
CONTENT_FREE = "N/A"


def from_file(path: str, ctx: FitContext, index: NDArray[np.int64]) -> NDArray[np.int64]:
    """Labels for the items at ``index`` from a JSONL file keyed by example id.

    Raises:
        CellError: for a missing file, an unknown label, or an item without a label.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CellError(f"relabel file not found: {file}")
    names = {name: k for k, name in enumerate(ctx.label_names)}
    values: dict[int, int] = {}
    for n, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        value = row["value"]
        label = names.get(value) if isinstance(value, str) else int(value)
        if label is None or not 0 <= label < ctx.n_classes:
            raise CellError(f"{file}:{n}: label {value!r} is not one of {ctx.n_classes} classes")
        values[int(row["id"])] = label
    ids = ctx.train.ids[index]
    missing = [int(i) for i in ids if int(i) not in values]
    if missing:
        raise CellError(f"{file}: no label for {len(missing)} flagged example(s), e.g. id {missing[0]}")
    return np.array([values[int(i)] for i in ids], dtype=np.int64)


@torch.no_grad()
def zero_shot(model_name: str, ctx: FitContext, index: NDArray[np.int64]) -> NDArray[np.int64]:
    """Zero-shot labels from a causal LM, calibrated on a content-free text.

    The label is the argmax over label names of log p(" name" | prompt), less the same score for
    :data:`CONTENT_FREE`. The log-likelihood is summed over the name's tokens (not length-normalised).

    Raises:
        CellError: when the model cannot be loaded or the texts are not available.
    """
    from bench.sdk import BenchError, causal_base, load_causal_tokenizer

    if len(ctx.train_texts) != len(ctx.train):
        raise CellError("relabeler 'model' needs the training texts, which this context lacks")
    try:  # the harness's causal names: the embedded smollm2, random:<shape>, an HF folder or hub name
        tokenizer = load_causal_tokenizer(model_name)
        lm: Any = causal_base(model_name, "bf16" if ctx.precision == "bf16" else "fp32").new()
        lm = lm.to(ctx.device).eval()
    except (BenchError, OSError, ValueError) as err:
        raise CellError(f"relabeler model {model_name!r} could not be loaded: {str(err).splitlines()[0]}") from None
    options = [tokenizer(" " + name, add_special_tokens=False)["input_ids"] for name in ctx.label_names]
    labels = ", ".join(ctx.label_names)

    def scores(text: str) -> NDArray[np.float64]:
        prompt = tokenizer(PROMPT.format(labels=labels, text=text))["input_ids"]
        return np.asarray(_option_scores(lm, prompt, options, ctx.device))

    prior = scores(CONTENT_FREE)
    out = np.empty(len(index), dtype=np.int64)
    for j, i in enumerate(index):
        out[j] = int(np.argmax(scores(ctx.train_texts[i]) - prior))
    return out


def _option_scores(lm: Any, prompt: list[int], options: list[list[int]], device: torch.device) -> list[float]:
    """Summed log-probabilities of each option's tokens after ``prompt`` (one padded batch)."""
    width = len(prompt) + max(len(o) for o in options)
    ids = torch.zeros((len(options), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for k, option in enumerate(options):
        row = prompt + option
        ids[k, : len(row)] = torch.tensor(row)
        mask[k, : len(row)] = 1
    logp = torch.log_softmax(lm(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
    scores = []
    for k, option in enumerate(options):
        positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(option))
        scores.append(float(logp[k, positions, torch.tensor(option)].sum()))
    return scores


def relabel(kind: str, ctx: FitContext, index: NDArray[np.int64], clean_logits: NDArray[np.float32], *,
            file: str | None = None, model: str | None = None) -> NDArray[np.int64] | None:
    """New labels for the training items at ``index`` (None: drop them).

    Args:
        kind: one of ``RELABELERS``.
        ctx: the fit context (label names, ids, texts).
        index: positions of the flagged items in ``ctx.train``.
        clean_logits: the clean model's logits for every training item (``clean-lora``).
        file: the JSONL file for ``file``.
        model: the causal LM name or folder for ``model``.
    """
    if kind == "drop":
        return None
    if kind == "clean-lora":
        return np.asarray(clean_logits[index].argmax(axis=1), dtype=np.int64)
    if kind == "file":
        return from_file(str(file), ctx, index)
    if kind == "model":
        return zero_shot(str(model), ctx, index)
    raise CellError(f"unknown relabeler {kind!r}; expected one of {', '.join(RELABELERS)}")
