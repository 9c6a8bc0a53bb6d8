"""Hyperparameter sweeps: a method's ``sweep:`` grid, expanded into one trial (an ordinary cell) per point.

A grid entry says, for example::

    lora: {sweep: {train.lr: [1.0e-3, 3.0e-3, 1.0e-2], config.r: [8, 16]}}

or nested, ``sweep: {train: {lr: [...]}}``, which is what ``--set methods.lora.sweep.train.lr=[...]``
writes (and which wins where a key is given both ways). A suite-level ``sweep:`` applies to
every entry without a ``sweep:`` of its own (``sweep: {}`` opts an entry out). The grid is the
product of the lists; each point is a trial: the entry with those values in its ``train:`` /
``config:`` blocks, so it resolves, hashes, runs and is stored like any other cell, on any
executor. Its spec carries ``sweep: {grid, trial}``, which is left out of the run id
(:data:`bench.spec.identity.NON_SEMANTIC_FIELDS`: a trial is the same computation as a cell
that fixes those values) and by which :mod:`bench.results.sweep` finds a method's trials and
selects one on validation accuracy (docs/sweep.md).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError, did_you_mean
from bench.spec.config import DECIMAL, build, merge

if TYPE_CHECKING:  # suite.py imports this module; the classes come through the objects it passes
    from bench.sdk.registry import MethodEntry
    from bench.spec.cells import Cell
    from bench.spec.suite import MethodSpec, Suite

#: The blocks of a grid entry a sweep may vary: ``train.<field>`` and ``config.<field>``.
SECTIONS = ("train", "config")
Point = tuple[tuple[str, Any], ...]
"""One trial's values, in the grid's key order: ``(("train.lr", 0.003),)``."""


def _flatten(raw: Any, where: str) -> dict[str, list[Any]]:
    """``{train.lr: [...]}`` or ``{train: {lr: [...]}}`` as ``{"train.lr": [...]}``, keys checked for form.

    Where a key is given both ways, the nested form wins: it is what ``--set`` writes.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise BenchError(f"{where}: expected a mapping of train.<field> or config.<field> to lists of values, "
                         f"got {raw!r}")
    dotted: dict[str, list[Any]] = {}
    nested: dict[str, list[Any]] = {}
    for key, value in raw.items():
        section, dot, name = str(key).partition(".")
        pairs = [(name, value)] if dot else list(value.items()) if isinstance(value, Mapping) else [("", value)]
        for field, values in pairs:
            if section not in SECTIONS or not field or "." in str(field):
                shown = f"{key}.{field}" if not dot and field else key
                raise BenchError(f"{where}: cannot sweep '{shown}': sweep keys are train.<field> or config.<field>")
            (dotted if dot else nested)[f"{section}.{field}"] = _values(values, f"{where}.{section}.{field}")
    return {**dotted, **nested}


def _values(values: Any, where: str) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise BenchError(f"{where}: expected a non-empty list of values, got {values!r}")
    seen = [float(v) if isinstance(v, str) and DECIMAL.fullmatch(v.strip()) else v for v in values]
    for i, value in enumerate(seen):
        if value in seen[:i]:
            raise BenchError(f"{where}: {values[i]!r} is listed twice (it would run the same trial twice)")
    return values


def _check_train(suite: Suite, method: MethodSpec, grid: dict[str, list[Any]], where: str) -> dict[str, list[Any]]:
    """The grid with its ``train.*`` values type-checked against the method's training config (ints as floats...)."""
    base = {f.name: getattr(suite.train, f.name) for f in dataclasses.fields(suite.train)}
    out = dict(grid)
    for key, values in grid.items():
        section, _, field = key.partition(".")
        fixed = method.train if section == "train" else method.config
        if field in fixed:
            raise BenchError(f"{where}: {key} is both fixed (in {section}:) and swept (in sweep:); keep one "
                             "(an entry without a sweep of its own takes the suite's; sweep: {} takes none)")
        if section != "train":
            continue  # a method config is checked when the cell resolves (the registry imports the method)
        if field not in base:
            raise BenchError(f"{where}: unknown key '{key}'" + did_you_mean(key, [f"train.{f}" for f in base]))
        trains = [build(type(suite.train), merge(base, {**method.train, field: v}), f"{where}: train") for v in values]
        out[key] = [getattr(t, field) for t in trains]
    return out


def check_sweeps(suite: Suite, suite_sweep: Any) -> Suite:
    """``suite`` with each entry's sweep validated and normalised (``{"train.lr": [0.001, ...]}``).

    An entry without ``sweep:`` (None) takes ``suite_sweep`` (the suite's ``sweep:``).

    Raises:
        BenchError: a key outside ``train.<field>``/``config.<field>``, an unknown training
            field, an empty or non-list value, a repeated value, a value of the wrong type or
            out of range, a key also fixed by the entry, or a sweep in a suite with generation tasks.
    """
    default = _flatten(suite_sweep, f"{suite.path}: sweep")
    methods = []
    for method in suite.methods:
        where = f"{suite.path}: methods.{method.id}"
        own = method.sweep is not None
        grid = _flatten(method.sweep, f"{where}.sweep") if own else dict(default)
        grid = _check_train(suite, method, grid, f"{where}.sweep" if own else f"{where} (the suite's sweep:)")
        methods.append(dataclasses.replace(method, sweep=grid or None))  # parsed: None is no sweep
    swept = [m.id for m in methods if m.sweep]
    generation = [t.name for t in suite.tasks if t.KIND != "classification"]
    if swept and generation:
        raise BenchError(f"{suite.path}: sweep: ({', '.join(swept)}) selects on validation accuracy, which "
                         f"generation tasks ({', '.join(generation)}) do not measure")
    return dataclasses.replace(suite, methods=tuple(methods))


def check_overrides(raw: dict[str, Any], overrides: tuple[str, ...]) -> dict[str, Any]:
    """Refuse a ``--set`` that fixes a swept key (``train.lr``, ``methods.lora.train.lr``); return ``raw``.

    ``raw`` is the suite's mapping with the overrides applied. A ``--set`` outranks the grid
    entry, so it would silently shrink the sweep to one trial; the way to change a sweep is to
    set its values: ``--set methods.lora.sweep.train.lr=[...]``. A malformed sweep is left to
    :func:`check_sweeps`.
    """
    methods = raw.get("methods")
    entries: Mapping[Any, Any] = methods if isinstance(methods, Mapping) else {}
    for assignment in overrides:
        parts = assignment.partition("=")[0].split(".")
        for method_id, entry in entries.items():
            own = entry.get("sweep") if isinstance(entry, Mapping) else None
            try:
                swept = _flatten(raw.get("sweep") if own is None else own, "")
            except BenchError:
                continue
            key = ".".join(parts[2:4]) if parts[:2] == ["methods", str(method_id)] else \
                ".".join(parts[:2]) if parts[0] == "train" else ""
            if key in swept:
                raise BenchError(f"--set {'.'.join(parts)}: methods.{method_id} sweeps {key}; set the sweep's "
                                 f"values instead (--set methods.{method_id}.sweep.{key}=[...])")
    return raw


def trials(method: MethodSpec) -> list[tuple[MethodSpec, Point]]:
    """The grid entry of every point of ``method``'s sweep (grid order), or ``[(method, ())]`` without one."""
    grid = method.sweep or {}
    if not grid:
        return [(method, ())]
    out = []
    for values in itertools.product(*grid.values()):
        point = tuple(zip(grid, values, strict=True))
        blocks: dict[str, dict[str, Any]] = {"train": {}, "config": {}}
        for key, value in point:
            section, _, field = key.partition(".")
            blocks[section][field] = value
        out.append((dataclasses.replace(method, train=merge(method.train, blocks["train"]),
                                        config=merge(method.config, blocks["config"])), point))
    return out


def spec_value(spec: Mapping[str, Any], key: str) -> Any:
    """The resolved value of a swept key in a cell's spec: ``train.lr`` -> ``spec["train"]["lr"]``."""
    section, _, field = key.partition(".")
    block = spec.get("train") if section == "train" else (spec.get("method") or {}).get("config")
    return (block or {}).get(field)


def sweep_grid(cell: Cell, entry: MethodEntry) -> dict[str, list[Any]] | None:
    """A trial's sweep grid, its ``config.*`` values built into the method's config; None for a plain cell.

    Each ``config.*`` value is built here, before the trial's own config, so that a wrong one
    is a one-line error naming the sweep when the suite resolves (``bench validate``).
    """
    if not cell.trial:
        return None
    grid = dict(cell.method.sweep or {})
    base = {k: v for k, v in cell.method.config.items() if f"config.{k}" not in grid}
    for key, values in grid.items():
        section, _, field = key.partition(".")
        if section == "config":
            where = f"{cell.suite}: methods.{cell.method.id}.sweep: config"
            grid[key] = [getattr(build(entry.config, {**base, field: v}, where), field) for v in values]
    return grid
