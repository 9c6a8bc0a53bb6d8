"""The method registry: a lazy name map, a decorator, and third-party entry points.

``bench ls`` lists names from the map and the entry points without importing any method
module (so without importing torch). A method module is imported only when a run or a
validation needs its adapter or config class.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from bench.errors import BenchError, did_you_mean

ENTRY_POINT_GROUP = "peftbench.methods"

#: Built-in methods: registry name -> "module:AdapterClass". One line per method.
BUILTIN_METHODS: dict[str, str] = {
    "lora": "methods.lora:LoraAdapter",
    "full-ft": "methods.full_ft:FullFtAdapter",
    "lora-dropout": "methods.lora_dropout:LoraDropoutAdapter",
    "ba-lora": "methods.ba_lora:BaLoraAdapter",
    "delora-nld": "methods.delora:DeloraAdapter",
    "small-loss": "methods.small_loss:SmallLossAdapter",
    "co-teaching": "methods.co_teaching:CoTeachingAdapter",
    "cleanlab": "methods.confident:ConfidentLearningAdapter",
    "lora-par": "methods.lora_par:LoraParAdapter",
}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its name, adapter class, config class and version."""

    name: str
    adapter: type[Any]
    config: type[Any]
    version: str
    kinds: tuple[str, ...] = ("classification",)
    """The task kinds the method trains (``classification``, ``generation``)."""


_REGISTERED: dict[str, MethodEntry] = {}


def check_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a lowercase registry name."""
    if not _NAME_RE.match(name):
        raise ValueError(f"Invalid method name {name!r}: use lowercase letters, digits, '-', '_'")


def register_method(name: str, *, config: type[Any], version: str = "1",
                    kinds: tuple[str, ...] = ("classification",)) -> Any:
    """Class decorator that registers a method adapter under ``name``.

    Args:
        name: Lowercase registry name, e.g. ``"lora"``.
        config: The method's frozen config dataclass.
        version: Bump it when a fix changes the method's numbers: it is part of run identity.
        kinds: The task kinds ``fit`` handles; a suite pairing the method with another kind
            is refused before any cell runs.
    """
    check_name(name)
    if not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"Invalid kinds for method {name!r}: {kinds!r}")

    def wrap(cls: type[Any]) -> type[Any]:
        old = _REGISTERED.get(name)
        same = old is not None and (old.adapter.__module__, old.adapter.__qualname__) == (
            cls.__module__, cls.__qualname__)  # the same class, defined again by a reload
        if old is not None and not same:
            raise ValueError(f"Method {name!r} is already registered by {old.adapter!r}")
        cls.name, cls.version, cls.config_cls = name, version, config
        _REGISTERED[name] = MethodEntry(name, cls, config, version, tuple(kinds))
        return cls

    return wrap


def _entry_point_methods() -> dict[str, str]:
    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN_METHODS:
            raise BenchError(f"entry point {ep.value!r} reuses built-in method name {ep.name!r}")
        found[ep.name] = ep.value
    return found


def method_names() -> list[str]:
    """All known method names, built-in and third-party, without importing them."""
    return sorted({*BUILTIN_METHODS, *_entry_point_methods(), *_REGISTERED})


def get_method(name: str) -> MethodEntry:
    """Import (once) and return the method registered as ``name``.

    Raises:
        BenchError: for an unknown name, with a did-you-mean.
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    target = BUILTIN_METHODS.get(name) or _entry_point_methods().get(name)
    if target is None:
        raise BenchError(f"unknown method '{name}'" + did_you_mean(name, method_names()))
    module_name, _, attr = target.partition(":")
    builtin = name in BUILTIN_METHODS
    try:
        module = importlib.import_module(module_name)
        getattr(module, attr)  # the import ran the decorator
    except Exception as err:  # a third-party package that fails to import is its author's bug, not a traceback
        if builtin:
            raise
        first = (str(err).splitlines() or [""])[0]
        raise BenchError(f"method '{name}' (entry point {target}) failed to load: {type(err).__name__}: {first}") \
            from None
    if name not in _REGISTERED:
        raise BenchError(f"{target} does not register a method named {name!r}")
    return _REGISTERED[name]
