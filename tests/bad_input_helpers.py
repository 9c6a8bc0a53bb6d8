"""The table-driven bad-input tests' harness: a toy world, suite builders, and the one check of every case.

Each case runs the CLI in process (``bench.cli.main``) in a fresh world: a toy dataset, a suite file
and a store holding two records (one with its predictions). The check is the README's promise for
bad input: exit 2, stderr exactly one ``error:`` line, no traceback, and the store byte for byte as
it was (every file's sha256, and no file or folder added).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import bench.run.parallel
import bench.run.runner
from bench.cli import main
from bench.results.record import make_record
from bench.results.store import Store

#: The valid suite every case edits: one classification task on the toy dataset, one method.
BASE: dict[str, Any] = {"name": "toy", "model": "minilm", "tasks": {"toy": {"dataset": "toyds"}},
                        "methods": {"lora": {}}, "train": {"epochs": 1}}
#: A valid generation task on the toy folder (its train.jsonl is the SFT split) and a causal preset.
GEN_TASK: dict[str, Any] = {"kind": "generation", "dataset": "toyds", "format": "fields",
                            "prompt_field": "text", "response_field": "text",
                            "evals": {"mmlu": {"task": "mmlu_local", "max_items": 2}}}
DROP = object()
"""A value for :func:`yml`: leave the key out."""

RUN = ("run", "--suite", "{suite}", "--data-dir", "{data}", "--results-dir", "{results}", "--quiet")
VALIDATE = ("validate", "--suite", "{suite}", "--data-dir", "{data}")


def yml(**top: Any) -> str:
    """The base suite with top-level keys replaced (``DROP`` removes one), as YAML text."""
    suite = copy.deepcopy(BASE)
    for key, value in top.items():
        if value is DROP:
            suite.pop(key, None)
        else:
            suite[key] = value
    return yaml.safe_dump(suite, sort_keys=False)


def task(**fields: Any) -> dict[str, Any]:
    """``tasks:`` with the toy task's fields updated."""
    return {"toy": {"dataset": "toyds", **fields}}


def train(**fields: Any) -> dict[str, Any]:
    """``train:`` with these fields beside ``epochs: 1``."""
    return {"epochs": 1, **fields}


def gen(model: str = "random:tiny-llama", methods: Any = None, **fields: Any) -> str:
    """A generation suite: the toy SFT task with ``fields`` updated."""
    return yml(model=model, methods=methods or {"lora": {}}, tasks={"sft": {**GEN_TASK, **fields}})


@dataclass(frozen=True)
class Case:
    """One bad input: the argv (with ``{suite}``, ``{data}``, ``{results}``, ``{tmp}`` filled in), and
    the fragment its one error line must hold."""

    id: str
    suite: str | bytes | None
    """The suite file's text, written to ``{suite}``; None writes the base suite."""
    message: str
    argv: tuple[str, ...] = RUN
    edit: Callable[[World], None] | None = None
    """Changes the world before the command (data files, the results folder, the environment)."""
    extra: tuple[str, ...] = ()
    """Arguments after ``argv`` (``--set``, flags)."""
    xfail: str = ""
    """A known defect not fixed yet (why): the case is expected to fail, strictly."""


@dataclass(frozen=True)
class World:
    """A case's files: ``tmp/data/toyds``, ``tmp/toy.yaml``, ``tmp/results`` (two records); its monkeypatch."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def toyds(self) -> Path:
        return self.data / "toyds"

    @property
    def results(self) -> Path:
        return self.tmp / "results"

    @property
    def suite(self) -> Path:
        return self.tmp / "toy.yaml"

    def fill(self, text: str) -> str:
        """``text`` with ``{tmp}``, ``{data}``, ``{results}``, ``{suite}`` filled in (no str.format: YAML braces)."""
        for name in ("tmp", "data", "results", "suite"):
            text = text.replace(f"{{{name}}}", str(getattr(self, name)))
        return text


def jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def rows(n: int) -> list[dict[str, Any]]:
    return [{"text": f"{['good', 'bad'][i % 2]} item {i}", "label": i % 2} for i in range(n)]


def record(seed: int, *, suite: str = "toy", method: str = "lora") -> dict[str, Any]:
    spec = {"suite": suite, "task": {"name": "toy", "dataset": "toyds"}, "noise": {"kind": "none", "label": "clean"},
            "model": {"name": "minilm"}, "method": {"id": method, "name": method}, "seed": seed}
    return make_record(run_id=f"{suite}{seed:02d}".ljust(12, "0")[:12], spec=spec, env={"device": "cpu"},
                       status="success", error=None, metrics={"accuracy": 0.5 + seed / 10},
                       started_at="2025-01-01T00:00:00Z", finished_at=f"2025-01-01T00:0{seed + 1}:00Z")


def store_with_records(root: Path, suite: str = "toy", method: str = "lora") -> Path:
    """Two successful records of ``suite`` in the store at ``root``, one with its predictions."""
    store = Store(root)
    store.write(record(0, suite=suite, method=method), {"ids": np.arange(4), "labels": np.array([0, 1, 0, 1]),
                                                        "probs": np.full((4, 2), 0.5)})
    store.write(record(1, suite=suite, method=method))
    return root


def make_world(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    world = World(tmp, monkeypatch)
    world.toyds.mkdir(parents=True)
    (world.toyds / "labels.json").write_text('["a", "b"]')
    (world.toyds / "train.jsonl").write_text(jsonl(rows(20)))
    (world.toyds / "test.jsonl").write_text(jsonl(rows(6)))
    store_with_records(world.results)
    for name in ("PEFTBENCH_HUB", "PEFTBENCH_RESULTS", "PEFTBENCH_DATA_DIR", "PEFTBENCH_SUITES"):
        monkeypatch.delenv(name, raising=False)
    return world


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path; folders map to ``dir``."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def params(cases: list[Case]) -> list[Any]:
    """``cases`` as pytest params, the known defects marked strict xfail."""
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail else [])
            for c in cases]


def _no_cell_runs(*_: Any, **__: Any) -> None:
    raise AssertionError("a cell was executed: the bad input was not refused before training")


def check(case: Case, world: World, capfd: pytest.CaptureFixture[str]) -> None:
    """Run ``case`` and assert the README's promise for bad input (and that no cell ran)."""
    world.monkeypatch.setattr(bench.run.runner, "run_cell", _no_cell_runs)
    world.monkeypatch.setattr(bench.run.parallel, "run_parallel", _no_cell_runs)
    if isinstance(case.suite, bytes):
        world.suite.write_bytes(case.suite)
    else:
        world.suite.write_text(world.fill(yml() if case.suite is None else case.suite))
    if case.edit is not None:
        case.edit(world)
    before = snapshot(world.results)
    assert len(before) >= 5, before  # toy/, toy/lora/, two records and one predictions file
    capfd.readouterr()
    try:
        code = main([world.fill(a) for a in (*case.argv, *case.extra)])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, out + err
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert world.fill(case.message) in lines[0], lines[0]
    assert snapshot(world.results) == before, "the store changed"
