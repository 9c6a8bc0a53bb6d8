"""The hub fallback writes a hub dataset into the shared layout (no network: a fake dataset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.data import hub
from bench.data.loaders import find_dataset, read_labels, read_split
from bench.errors import BenchError


class _Feature:
    names = ["neg", "pos"]


class _Split(list):
    features = {"label": _Feature(), "text": object()}


def test_materialize_writes_the_shared_layout(tmp_path: Path) -> None:
    fake = {"train": _Split([{"text": "good", "label": 1}, {"text": "bad", "label": 0}]),
            "test": _Split([{"text": "fine", "label": 1}])}
    folder = hub.materialize(fake, tmp_path / "sst2")
    assert read_labels(folder) == ["neg", "pos"]
    assert read_split(folder, "train") == [{"text": "good", "label": 1, "label_text": "pos"},
                                           {"text": "bad", "label": 0, "label_text": "neg"}]
    assert json.loads((folder / "test.jsonl").read_text())["text"] == "fine"


def test_missing_dataset_without_hub_names_the_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hub.HUB_ENV, raising=False)
    with pytest.raises(BenchError, match=f"{hub.HUB_ENV}=1"):
        find_dataset("imdb", tmp_path)


def test_hub_fallback_is_used_when_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hub.HUB_ENV, "1")
    monkeypatch.setattr(hub, "from_hub", lambda name: tmp_path / f"hub-{name}")
    assert find_dataset("imdb", tmp_path) == tmp_path / "hub-imdb"
