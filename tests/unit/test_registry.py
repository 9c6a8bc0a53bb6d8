"""Tests for bench.sdk.registry: lazy built-ins, the decorator's checks, third-party entry points."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

import bench.sdk.registry as registry
from bench.errors import BenchError
from bench.sdk.registry import (
    BUILTIN_METHODS,
    ENTRY_POINT_GROUP,
    MethodEntry,
    get_method,
    method_names,
    register_method,
)

REPO = Path(__file__).resolve().parents[2]

# A third-party method package, as a plugin author would write it. The tests write it to a
# temporary folder on sys.path and point an entry point at it, so that importing it is
# observable and it never registers into the real registry at collection time.
TOY_MODULE = "peftbench_toy_plugin"
TOY_SOURCE = '''
from dataclasses import dataclass

from bench.sdk.registry import register_method


@dataclass(frozen=True)
class ToyConfig:
    """A toy config."""

    width: int = 3


@register_method("toy", config=ToyConfig, version="7")
class ToyAdapter:
    """Does nothing."""


class Unregistered:
    """Importable, but registers nothing."""
'''


@dataclass(frozen=True)
class DummyConfig:
    size: int = 1


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registrations made by a test do not leak into the process-wide registry."""
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))
    yield
    sys.modules.pop(TOY_MODULE, None)


@pytest.fixture
def toy_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[EntryPoint]:
    (tmp_path / f"{TOY_MODULE}.py").write_text(TOY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [EntryPoint(name="toy", value=f"{TOY_MODULE}:ToyAdapter", group=ENTRY_POINT_GROUP)]
    groups: list[str] = []

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        groups.append(group)
        return found if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    return found


# --- built-ins ---------------------------------------------------------------------------

def test_builtin_names_listed_without_importing_them() -> None:
    code = ("import sys; from bench.sdk.registry import method_names; print(','.join(method_names())); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('methods.')]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    names = result.stdout.strip().split(",")
    assert {"lora", "full-ft"} <= set(names)
    assert names == sorted(names)


def test_builtin_map_is_well_formed() -> None:
    for name, target in BUILTIN_METHODS.items():
        registry.check_name(name)
        module, _, attr = target.partition(":")
        assert module.startswith("methods.") and attr
        assert (REPO / (module.replace(".", "/") + ".py")).is_file()


@pytest.fixture(scope="module")
def lora_imported() -> None:
    import methods.lora  # noqa: F401  (imports torch once for this module)


def test_get_method_lora(lora_imported: None) -> None:
    from methods.lora import LoraAdapter, LoraConfig

    entry = get_method("lora")
    assert isinstance(entry, MethodEntry)
    assert entry == MethodEntry("lora", LoraAdapter, LoraConfig, "2", ("classification", "generation"))
    assert (LoraAdapter.name, LoraAdapter.version, LoraAdapter.config_cls) == ("lora", "2", LoraConfig)
    assert get_method("lora") is entry  # memoised
    assert LoraConfig().r == 8


@pytest.mark.parametrize(("typo", "suggestion"), [("lroa", "lora"), ("full_ft", "full-ft"),
                                                  ("fullft", "full-ft")])
def test_unknown_name_did_you_mean(typo: str, suggestion: str) -> None:
    with pytest.raises(BenchError) as info:
        get_method(typo)
    assert str(info.value) == f"unknown method '{typo}' (did you mean '{suggestion}'?)"


def test_unknown_name_far_from_everything_lists_known() -> None:
    with pytest.raises(BenchError) as info:
        get_method("zzzzzzzz")
    assert "known: " in str(info.value) and "lora" in str(info.value)


# --- register_method ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["LoRA", "Lora", "my method", "", "-lora", "lora!", "lóra"])
def test_register_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="Invalid method name"):
        register_method(name, config=DummyConfig)
    assert name not in registry._REGISTERED


def test_register_sets_attributes_and_lists_name() -> None:
    @register_method("dummy-1", config=DummyConfig, version="3")
    class Dummy:
        pass

    assert (Dummy.name, Dummy.version, Dummy.config_cls) == ("dummy-1", "3", DummyConfig)
    assert "dummy-1" in method_names()
    assert get_method("dummy-1") == MethodEntry("dummy-1", Dummy, DummyConfig, "3")


def test_register_duplicate_name_by_another_class_raises() -> None:
    @register_method("dummy", config=DummyConfig)
    class First:
        pass

    class Second:
        pass

    with pytest.raises(ValueError, match="'dummy' is already registered"):
        register_method("dummy", config=DummyConfig)(Second)
    assert get_method("dummy").adapter is First


def test_register_duplicate_same_class_name_other_module_raises() -> None:
    first = type("Adapter", (), {"__module__": "plugin_a"})
    second = type("Adapter", (), {"__module__": "plugin_b"})
    register_method("dummy", config=DummyConfig)(first)
    with pytest.raises(ValueError, match="already registered"):
        register_method("dummy", config=DummyConfig)(second)
    assert get_method("dummy").adapter is first


def test_reregistering_same_class_is_allowed() -> None:
    """A module imported twice (reload) defines an equal class again: not a conflict."""
    first = type("Adapter", (), {"__module__": "plugin_a"})
    again = type("Adapter", (), {"__module__": "plugin_a"})
    register_method("dummy", config=DummyConfig)(first)
    register_method("dummy", config=DummyConfig, version="2")(again)
    assert get_method("dummy").adapter is again
    assert get_method("dummy").version == "2"


def test_builtin_name_cannot_be_taken(lora_imported: None) -> None:
    get_method("lora")

    class LoraImpostor:
        pass

    with pytest.raises(ValueError, match="'lora' is already registered"):
        register_method("lora", config=DummyConfig)(LoraImpostor)


# --- entry points ------------------------------------------------------------------------

def test_entry_point_is_listed_without_import(toy_entry_points: list[EntryPoint]) -> None:
    names = method_names()
    assert "toy" in names and "lora" in names
    assert TOY_MODULE not in sys.modules


def test_entry_point_is_loaded_on_demand(toy_entry_points: list[EntryPoint]) -> None:
    entry = get_method("toy")
    assert TOY_MODULE in sys.modules
    module = sys.modules[TOY_MODULE]
    assert entry == MethodEntry("toy", module.ToyAdapter, module.ToyConfig, "7")
    assert entry.config().width == 3


def test_entry_point_did_you_mean(toy_entry_points: list[EntryPoint]) -> None:
    with pytest.raises(BenchError, match=r"did you mean 'toy'\?"):
        get_method("tyo")


def test_entry_point_reusing_builtin_name(toy_entry_points: list[EntryPoint]) -> None:
    toy_entry_points.append(EntryPoint(name="lora", value=f"{TOY_MODULE}:ToyAdapter",
                                       group=ENTRY_POINT_GROUP))
    with pytest.raises(BenchError, match="reuses built-in method name 'lora'"):
        method_names()


def test_entry_point_that_registers_nothing(toy_entry_points: list[EntryPoint]) -> None:
    toy_entry_points[0] = EntryPoint(name="ghost", value=f"{TOY_MODULE}:Unregistered",
                                     group=ENTRY_POINT_GROUP)
    with pytest.raises(BenchError, match="does not register a method named 'ghost'"):
        get_method("ghost")


@pytest.mark.parametrize(("value", "message"), [
    ("peftbench_no_such_package.methods:Adapter",
     "method 'broken' (entry point peftbench_no_such_package.methods:Adapter) failed to load: "
     "ModuleNotFoundError: No module named 'peftbench_no_such_package'"),
    (f"{TOY_MODULE}:NoSuchAttribute", f"failed to load: AttributeError: module '{TOY_MODULE}' has no attribute"),
])
def test_a_broken_entry_point_is_a_one_line_error(toy_entry_points: list[EntryPoint], value: str,
                                                   message: str) -> None:
    # issue 19 item 12: an entry point whose module does not import gave a traceback
    toy_entry_points[0] = EntryPoint(name="broken", value=value, group=ENTRY_POINT_GROUP)
    with pytest.raises(BenchError) as info:
        get_method("broken")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_real_entry_point_group_is_queried(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def spy(**kwargs: Any) -> list[EntryPoint]:
        seen.append(kwargs)
        return []

    monkeypatch.setattr(registry, "entry_points", spy)
    assert "lora" in method_names()
    assert seen == [{"group": "peftbench.methods"}]
