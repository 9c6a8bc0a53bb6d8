"""Task kinds: one module per kind, each implementing :class:`bench.kinds.base.TaskKind`.

``KINDS`` maps a kind's name (a task spec's ``KIND``) to the object implementing it; kinds
are imported on first use, so resolving a suite imports only the kinds it has.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bench.errors import BenchError, did_you_mean

if TYPE_CHECKING:
    from bench.kinds.base import TaskKind

#: kind name -> "module:attribute" of its :class:`~bench.kinds.base.TaskKind`. One line per kind.
KINDS: dict[str, str] = {
    "classification": "bench.kinds.classification:KIND",
    "generation": "bench.kinds.generation:KIND",
}


def get_kind(name: str) -> TaskKind:
    """The task kind called ``name``.

    Raises:
        BenchError: for an unknown kind.
    """
    target = KINDS.get(name)
    if target is None:
        raise BenchError(f"unknown task kind '{name}'" + did_you_mean(name, KINDS))
    module, _, attr = target.partition(":")
    kind: TaskKind = getattr(importlib.import_module(module), attr)
    return kind
