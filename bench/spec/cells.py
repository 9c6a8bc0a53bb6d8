"""The grid of a suite and each cell's fully resolved spec (the input of its identity)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.spec.config import build
from bench.data.loaders import file_digest, find_dataset, split_file
from bench.data.noise import NoiseSpec
from bench.spec.generation import GenerationTaskSpec
from bench.sdk.registry import get_method
from bench.spec.suite import MethodSpec, Suite, TaskSpec, TrainConfig


@dataclass(frozen=True)
class Cell:
    """One run: task × noise × method × seed, with everything resolved."""

    suite: str
    model: str
    task: TaskSpec | GenerationTaskSpec
    noise: NoiseSpec
    method: MethodSpec
    seed: int
    train: TrainConfig

    @property
    def label(self) -> str:
        """Short display name."""
        noise = "real-noise" if getattr(self.task, "truth_field", None) and self.noise.kind == "none" \
            else self.noise.label()  # the data's own labels, scored against its gold field (as in reports)
        return f"{self.task.name} {noise} {self.method.id} seed{self.seed}"


def plan(suite: Suite) -> list[Cell]:
    """All cells, task-major so that data and base model stay cached across methods."""
    return [
        Cell(suite.name, suite.model.name, task, noise, method, seed, suite.train_for(method))
        for task in suite.tasks for noise in (task.noise or suite.noise)
        for seed in suite.seeds for method in suite.methods
    ]


def data_version(task: TaskSpec, data_dir: Path) -> str:
    """Digest of the files a task reads (all splits present in its folders)."""
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


def resolve_spec(cell: Cell, data_dir: Path) -> dict[str, Any]:
    """The cell's resolved spec: method config with defaults, data digest, noise, training.

    Raises:
        BenchError: unknown method, bad method config, missing data.
    """
    entry = get_method(cell.method.method)
    config = build(entry.config, cell.method.config, f"{cell.suite}: methods.{cell.method.id}.config")
    noise = asdict(cell.noise)
    if cell.noise.kind == "asymmetric" and cell.noise.pair_map is None:
        noise["pair_map"] = getattr(cell.task, "pair_map", None)  # the task's default map (METHODS.md §1.2)
    noise["label"] = cell.noise.label()
    task = {k: v for k, v in asdict(cell.task).items() if k != "noise"}  # the cell's noise is below
    if isinstance(cell.task, GenerationTaskSpec):
        from bench.evaluate.lm_tasks import resolve_generation_task

        task.update(resolve_generation_task(cell.task, entry, data_dir))
    else:
        task["data_version"] = data_version(cell.task, data_dir)
    return {
        "suite": cell.suite,
        "task": task,
        "noise": noise,
        "model": {"name": cell.model},
        "method": {"id": cell.method.id, "name": entry.name, "version": entry.version,
                   "config": asdict(config)},
        "train": asdict(cell.train),
        "seed": cell.seed,
    }
