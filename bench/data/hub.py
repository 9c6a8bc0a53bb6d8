"""Fallback to the Hugging Face hub for a dataset that is not in the data directory.

Only used where the machine reaches the hub and the user allows it (``PEFTBENCH_HUB=1``,
``datasets`` installed). The hub dataset is written once into the shared layout under the
cache directory, so every later run reads local files like any other dataset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.data.tokens import cache_dir
from bench.errors import BenchError

HUB_ENV = "PEFTBENCH_HUB"


def hub_allowed() -> bool:
    """True when the user turned the hub fallback on."""
    return os.environ.get(HUB_ENV) == "1"


def _label_names(split: Any, label_field: str) -> list[str]:
    feature = split.features[label_field]
    names = getattr(feature, "names", None)
    if not names:
        raise BenchError(f"hub dataset: field '{label_field}' is not a ClassLabel; cannot build labels.json")
    return [str(n) for n in names]


def materialize(dataset: Any, folder: Path, *, text_field: str = "text", label_field: str = "label") -> Path:
    """Write a ``datasets.DatasetDict`` as ``<split>.jsonl`` + ``labels.json`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    names: list[str] | None = None
    for split_name, split in dataset.items():
        names = names or _label_names(split, label_field)
        tmp = folder / f".{split_name}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in split:
                label = int(row[label_field])
                handle.write(json.dumps({"text": row[text_field], "label": label, "label_text": names[label]}) + "\n")
        os.replace(tmp, folder / f"{split_name}.jsonl")
    (folder / "labels.json").write_text(json.dumps(names))
    return folder


def from_hub(name: str) -> Path:
    """Download ``name`` with ``datasets`` into the cache in the shared layout (once)."""
    folder = cache_dir() / "datasets" / name.replace("/", "__")
    if (folder / "labels.json").exists():
        return folder
    try:
        import datasets
    except ImportError:
        raise BenchError(f"dataset '{name}': the hub fallback needs `pip install datasets`") from None
    try:
        loaded = datasets.load_dataset(name)
    except Exception as err:  # network, auth or a missing dataset: one line for the user
        raise BenchError(f"dataset '{name}' could not be loaded from the hub: {str(err).splitlines()[0]}") from None
    return materialize(loaded, folder)
