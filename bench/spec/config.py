"""Strict construction of frozen config dataclasses from YAML-like dicts.

Unknown keys are errors with a did-you-mean, values are type-checked against the field
annotations (an int is accepted where a float is expected), and ``--set key=value``
overrides are applied to the raw dict before validation, so only resolved values are hashed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import yaml

from bench.errors import BenchError, did_you_mean

T = TypeVar("T")
#: A number in decimal or exponent notation, as people write learning rates (``1e-4``, ``5E-3``).
DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join("None" if arm is type(None) else _type_name(arm) for arm in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        meant: BenchError | None = None
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm, where)
            except BenchError as err:
                if isinstance(value, Mapping) and dataclasses.is_dataclass(arm):
                    meant = err  # a mapping for this dataclass: its own error (unknown key, bad value) says why
        raise meant or BenchError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise BenchError(f"{where}: expected null, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BenchError(f"{where}: expected a list, got {value!r}")
        (arm, *_) = typing.get_args(tp)
        return tuple(_coerce(v, arm, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise BenchError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and DECIMAL.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool:
            raise BenchError(f"{where}: expected {tp.__name__}, got {value!r}")
        if not isinstance(value, tp):
            raise BenchError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value, where)
    return value


def build(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types.

    Raises:
        BenchError: one line naming ``where`` (file and key path) and the problem.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise BenchError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise BenchError(f"{where}: unknown key '{key}'" + did_you_mean(str(key), fields))
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        built = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise BenchError(f"{where}: {err}") from None
    for key, value in kwargs.items():  # the class's own rule spoke first; no field means anything by .nan or .inf
        if isinstance(value, float) and not math.isfinite(value):
            raise BenchError(f"{where}.{key}: expected a finite number, got {value}")
    return built


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set a.b.c=value`` to a raw config dict in place (value parsed as YAML)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise BenchError(f"--set expects key=value, got {assignment!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise BenchError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a mapping")
        node = child
    node[parts[-1]] = value


#: Suite sections that a task's or a method's grid entry may also hold, and which of the two may.
ENTRY_SECTIONS = {"train": ("methods",), "resources": ("methods", "tasks")}


def outrank_entries(raw: dict[str, Any], assignment: str) -> None:
    """Apply a ``--set train.x=v`` (or ``resources.x=v``) also to the entries' own blocks that set ``x``.

    So that ``--set`` outranks a grid entry's ``train:`` block (precedence: defaults < suite <
    entry < ``--set``), and a task's or method's ``resources:``.
    """
    key = assignment.partition("=")[0]
    section, _, rest = key.partition(".")
    for group in ENTRY_SECTIONS.get(section, ()) if rest else ():
        entries = raw.get(group)
        for entry in entries.values() if isinstance(entries, dict) else ():
            block = entry.get(section) if isinstance(entry, dict) else None
            if isinstance(block, dict) and rest.split(".")[0] in block:
                apply_override(block, assignment[len(section) + 1:])


def merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``child`` over ``base``: mappings merge, everything else is replaced."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
