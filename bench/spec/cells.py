"""The grid of a suite (:class:`Cell`) and a cell resolved once for identity and execution.

A :class:`ResolvedCell` is made by :func:`bench.run.runner.resolve` before anything runs: the
method's config built with its defaults, the noise with the task's default asymmetric map
filled in, the data digests, and the run id of that spec. Execution reads the same object, so
what is hashed is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data.loaders import file_digest, find_dataset, split_file
from bench.data.noise import NoiseSpec
from bench.sdk.registry import MethodEntry
from bench.spec.generation import GenerationTaskSpec
from bench.spec.resources import Resources
from bench.spec.suite import MethodSpec, Suite, TaskSpec, TrainConfig
from bench.spec.sweep import Point, trials


@dataclass(frozen=True)
class Cell:
    """One run: task × noise × method × seed, as the suite states it."""

    suite: str
    model: str
    task: TaskSpec | GenerationTaskSpec
    noise: NoiseSpec
    method: MethodSpec
    seed: int
    train: TrainConfig
    resources: Resources = field(default_factory=Resources)
    """What an executor reserves for it (the suite's ``resources:``); not part of its identity."""
    trial: Point = ()
    """Where a method's ``sweep:`` put this cell, ``(("train.lr", 0.003),)``; empty for a plain cell."""

    @property
    def kind(self) -> str:
        """The task kind that runs this cell (``classification`` or ``generation``)."""
        return self.task.KIND

    @property
    def label(self) -> str:
        """Short display name."""
        noise = "real-noise" if getattr(self.task, "truth_field", None) and self.noise.kind == "none" \
            else self.noise.label()  # the data's own labels, scored against its gold field (as in reports)
        point = ",".join(f"{key.partition('.')[2]}={value}" for key, value in self.trial)
        return f"{self.task.name} {noise} {self.method.id}{f'[{point}]' if point else ''} seed{self.seed}"


@dataclass(frozen=True)
class ResolvedCell:
    """A cell with everything resolved: what is hashed into ``run_id`` is what executes."""

    cell: Cell
    noise: NoiseSpec
    """The cell's noise, with the task's default asymmetric map filled in (METHODS.md §1.2)."""
    method: MethodEntry
    config: Any
    """The method's config dataclass, built with its defaults."""
    spec: dict[str, Any]
    """The resolved spec: the record's ``spec`` and the input of the identity hash."""
    run_id: str

    @property
    def kind(self) -> str:
        """The task kind that runs this cell."""
        return self.cell.kind

    @property
    def label(self) -> str:
        """Short display name."""
        return self.cell.label


def plan(suite: Suite) -> list[Cell]:
    """All cells, task-major so that data and base model stay cached across methods (a sweep's trials in grid order)."""
    return [
        Cell(suite.name, suite.model.name, task, noise, trial, seed, suite.train_for(trial),
             suite.resources.for_cell(task.name, method.id), point)
        for task in suite.tasks for noise in (task.noise or suite.noise)
        for seed in suite.seeds for method in suite.methods for trial, point in trials(method)
    ]


def data_version(task: TaskSpec, data_dir: Path) -> str:
    """Digest of the files a classification task reads (all splits present in its folders)."""
    folders = {find_dataset(task.dataset, data_dir)}
    if task.train_dataset:
        folders.add(find_dataset(task.train_dataset, data_dir))
    digests = []
    for folder in sorted(folders):
        for split in (task.train_split, task.val_split or "validation", task.test_split):
            path = split_file(folder, split)
            if path is not None:
                digests.append(f"{folder.name}/{path.name}:{file_digest(path)[:16]}")
    return ",".join(sorted(set(digests)))
