"""Tokenised splits, cached on disk per (texts, tokenizer, max length)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

CACHE_ENV = "PEFTBENCH_CACHE"


def cache_dir() -> Path:
    """``$PEFTBENCH_CACHE`` or ``~/.cache/peftbench``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "peftbench"))


@dataclass(frozen=True)
class Encoded:
    """Token ids (unpadded) with labels and source row ids."""

    input_ids: list[NDArray[np.int64]]
    labels: NDArray[np.int64]
    ids: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> NDArray[np.int64]:
        """Unpadded length of each item."""
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self))

    def with_labels(self, labels: NDArray[np.int64]) -> Encoded:
        """The same items with other labels (e.g. after noise injection)."""
        return Encoded(self.input_ids, np.asarray(labels, dtype=np.int64), self.ids)

    def subset(self, index: NDArray[np.int64]) -> Encoded:
        """The items at ``index``."""
        return Encoded([self.input_ids[i] for i in index], self.labels[index], self.ids[index])


def _key(texts: list[str], tokenizer: Any, max_length: int) -> str:
    digest = hashlib.sha256()
    ident = [type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer), max_length]
    digest.update(json.dumps(ident).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "replace"))
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def tokenize(texts: list[str], tokenizer: Any, max_length: int) -> list[NDArray[np.int64]]:
    """Token ids of ``texts`` (truncated, with special tokens), via the on-disk cache."""
    path = cache_dir() / "tokens" / f"{_key(texts, tokenizer, max_length)}.npz"
    if path.exists():
        with np.load(path) as blob:
            flat, offsets = blob["flat"], blob["offsets"]
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    arrays = [np.asarray(x, dtype=np.int64) for x in ids]
    offsets = np.cumsum([0] + [len(a) for a in arrays])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, flat=np.concatenate(arrays) if arrays else np.zeros(0, np.int64), offsets=offsets)
    os.replace(tmp, path)
    return arrays


def encode(texts: list[str], labels: NDArray[np.int64], ids: NDArray[np.int64],
           tokenizer: Any, max_length: int) -> Encoded:
    """Tokenise a split into :class:`Encoded`."""
    return Encoded(tokenize(texts, tokenizer, max_length), np.asarray(labels, np.int64), ids)
