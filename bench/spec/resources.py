"""What a cell asks of the executor that runs it: CPU cores and GPUs (a suite's ``resources:``).

``resources:`` may stand at the top of a suite (every cell's default), in a task and in a
method's grid entry, each a mapping of ``num_cpus`` and/or ``num_gpus``::

    resources: {num_cpus: 1}          # every cell
    tasks:
      gsm8k: {dataset: gsm8k, kind: generation, resources: {num_gpus: 1}}

Methods:
      full-ft: {resources: {num_cpus: 2}}

Precedence, lowest first: :class:`Resources`' defaults < the suite's < the task's < the
method's < ``--set`` (``--set resources.num_gpus=1`` outranks the entries too). The Ray
executor (:mod:`bench.run.ray_executor`) reserves these per cell and gives the cell
``int(num_cpus)`` torch threads; the local executor (``--jobs N``) shares the cores out as
before and does not read them. They are not part of a cell's identity: where a cell runs does
not make it another cell (its record's ``env`` says where it ran).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.spec.config import build, merge


@dataclass(frozen=True)
class Resources:
    """The CPU cores and GPUs one cell reserves."""

    num_cpus: float = 1.0
    """CPU cores reserved for the cell; it runs ``max(1, int(num_cpus))`` torch threads."""
    num_gpus: float = 0.0
    """GPUs reserved: 0 (CPU only), a fraction below 1 (cells share a GPU) or a whole number."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.num_cpus) and self.num_cpus > 0):
            raise ValueError(f"Invalid num_cpus {self.num_cpus}: must be a finite number > 0")
        if not (math.isfinite(self.num_gpus) and self.num_gpus >= 0):
            raise ValueError(f"Invalid num_gpus {self.num_gpus}: must be a finite number >= 0")
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ValueError(f"Invalid num_gpus {self.num_gpus}: above 1 it must be a whole number")

    @property
    def threads(self) -> int:
        """The torch threads of a cell with these resources."""
        return max(1, int(self.num_cpus))


@dataclass(frozen=True)
class ResourcePlan:
    """A suite's resources: its default and each (task name, method id) cell shape's own."""

    default: Resources = field(default_factory=Resources)
    cells: dict[tuple[str, str], Resources] = field(default_factory=dict)

    def for_cell(self, task: str, method: str) -> Resources:
        """The resources of the cells of task ``task`` and method id ``method``."""
        return self.cells.get((task, method), self.default)


def _take(entries: Any, key_name: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Remove ``resources:`` from each mapping of ``entries``; (the entries without it, name -> its raw value)."""
    if not isinstance(entries, dict):
        return entries, {}
    out, taken = {}, {}
    for key, entry in entries.items():
        if isinstance(entry, dict) and "resources" in entry:
            entry = dict(entry)
            name = str(entry.get(key_name, key)) if key_name else str(key)
            taken[name] = entry.pop("resources")
        out[key] = entry
    return out, taken


def take_resources(raw: dict[str, Any], where: str) -> tuple[dict[str, Any], ResourcePlan]:
    """Split a raw suite into the suite without its ``resources:`` blocks and their :class:`ResourcePlan`.

    Every block is validated here (unknown keys, types, values), so ``bench validate`` refuses a
    bad one.

    Raises:
        BenchError: one line naming the block and the problem.
    """
    raw = dict(raw)
    top = raw.pop("resources", None)
    default = build(Resources, top, f"{where}: resources")
    raw["tasks"], tasks = _take(raw.get("tasks"), "name")
    raw["methods"], methods = _take(raw.get("methods"), "")
    for kind, blocks in (("tasks", tasks), ("methods", methods)):
        for name, block in blocks.items():
            build(Resources, block, f"{where}: {kind}.{name}.resources")
    cells = {}
    for task in _names(raw["tasks"], "name"):
        for method in _names(raw["methods"], ""):
            own_task, own_method = tasks.get(task) or {}, methods.get(method) or {}
            if own_task or own_method:
                merged = merge(merge(top or {}, own_task), own_method)
                cells[(task, method)] = build(Resources, merged, f"{where}: methods.{method}.resources")
    return raw, ResourcePlan(default=default, cells=cells)


def _names(entries: Any, key_name: str) -> list[str]:
    """The names of a raw suite's tasks (their ``name:``, else their key) or method ids."""
    if not isinstance(entries, dict):
        return []
    return [str(e.get(key_name, k)) if key_name and isinstance(e, dict) else str(k) for k, e in entries.items()]
