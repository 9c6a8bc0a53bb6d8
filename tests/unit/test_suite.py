"""Tests for bench.spec.suite and bench.spec.config: strict YAML suites, include:, --set, precedence."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.data.noise import NoiseSpec
from bench.errors import BenchError
from bench.spec.config import apply_override, build, merge
from bench.spec.suite import (
    MethodSpec,
    ModelSpec,
    Suite,
    TaskSpec,
    TrainConfig,
    load_suite,
    suite_names,
)

REPO_SUITES = Path(__file__).resolve().parents[2] / "suites"

BASIC = """\
name: tiny
description: a two-task suite
model: minilm
train:
  epochs: 2
  lr: 1.0e-3
tasks:
  trec:
    dataset: trec
    max_train: 100
  sst2:
    dataset: sst2
    pair_map: sst2
noise:
  - {kind: none}
  - {kind: symmetric, rate: 0.2}
seeds: [0, 1]
methods:
  lora:
    config: {r: 4}
  fast-lora:
    method: lora
    train: {lr: 2.0e-3}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def suite_error(path: Path, *overrides: str) -> str:
    with pytest.raises(BenchError) as info:
        load_suite(str(path), overrides)
    message = str(info.value)
    assert "\n" not in message  # one line for the CLI
    return message


# --- a valid suite ----------------------------------------------------------------------

def test_valid_suite_parses_into_frozen_dataclasses(tmp_path: Path) -> None:
    path = write(tmp_path, "tiny.yaml", BASIC)
    suite = load_suite(str(path))

    assert isinstance(suite, Suite)
    assert suite.name == "tiny"
    assert suite.description == "a two-task suite"
    assert suite.path == str(path)
    assert suite.model == ModelSpec(name="minilm")
    assert suite.train == TrainConfig(epochs=2, lr=1e-3)
    assert [t.name for t in suite.tasks] == ["trec", "sst2"]
    assert suite.tasks[0] == TaskSpec(dataset="trec", name="trec", max_train=100)
    assert suite.tasks[1].pair_map == "sst2"
    assert suite.noise == (NoiseSpec(kind="none"), NoiseSpec(kind="symmetric", rate=0.2))
    assert suite.seeds == (0, 1)
    assert suite.methods == (
        MethodSpec(id="lora", method="lora", config={"r": 4}),
        MethodSpec(id="fast-lora", method="lora", train={"lr": 2e-3}),
    )
    for obj in (suite, suite.train, suite.tasks[0], suite.model, suite.methods[0], suite.noise[1]):
        assert dataclasses.is_dataclass(obj)
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.name = "changed"  # type: ignore[misc]


def test_defaults_when_keys_are_left_out(tmp_path: Path) -> None:
    path = write(tmp_path, "min.yaml", "tasks: {trec: {dataset: trec}}\nmethods: {lora: }\n")
    suite = load_suite(str(path))
    assert suite.name == "min"  # the file stem
    assert suite.model.name == "minilm"
    assert suite.train == TrainConfig()
    assert suite.noise == (NoiseSpec(kind="none"),)
    assert suite.seeds == (0,)
    assert suite.methods == (MethodSpec(id="lora", method="lora"),)


def test_model_may_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "model: {name: random:tiny-bert}\n"
                 "tasks: {trec: {dataset: trec}}\nmethods: {lora: {}}\n")
    assert load_suite(str(path)).model == ModelSpec(name="random:tiny-bert")


# --- include: ----------------------------------------------------------------------------

def test_include_merges_deep_and_child_wins(tmp_path: Path) -> None:
    write(tmp_path, "_base.yaml", """\
model: minilm
train: {epochs: 4, batch_size: 16, lr: 5.0e-3}
tasks:
  trec: {dataset: trec, max_train: 100, max_length: 64}
methods:
  lora: {}
seeds: [0, 1, 2]
""")
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub", "child.yaml", """\
include: ../_base.yaml
name: child
train: {epochs: 1}
tasks:
  trec: {max_train: 50}
  sst2: {dataset: sst2}
seeds: [7]
""")
    suite = load_suite(str(child))
    assert suite.name == "child"
    # train merged key by key: epochs from the child, the rest from the parent
    assert suite.train == TrainConfig(epochs=1, batch_size=16, lr=5e-3)
    trec, sst2 = suite.tasks
    assert (trec.dataset, trec.max_train, trec.max_length) == ("trec", 50, 64)
    assert sst2.dataset == "sst2"
    assert suite.seeds == (7,)  # lists are replaced, not appended
    assert [m.id for m in suite.methods] == ["lora"]


def test_include_chain_of_three(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "train: {epochs: 5, batch_size: 8}\ntasks: {trec: {dataset: trec}}\n")
    write(tmp_path, "b.yaml", "include: a.yaml\ntrain: {batch_size: 4}\nmethods: {lora: {}}\n")
    c = write(tmp_path, "c.yaml", "include: b.yaml\ntrain: {lr: 0.1}\n")
    assert load_suite(str(c)).train == TrainConfig(epochs=5, batch_size=4, lr=0.1)


def test_include_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "include: b.yaml\ntasks: {trec: {dataset: trec}}\n")
    b = write(tmp_path, "b.yaml", "include: a.yaml\nmethods: {lora: {}}\n")
    assert "include cycle" in suite_error(b)
    selfish = write(tmp_path, "self.yaml", "include: self.yaml\n")
    message = suite_error(selfish)
    assert "include cycle" in message and "self.yaml" in message


def test_include_of_missing_file_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "include: nothere.yaml\n")
    message = suite_error(path)
    assert "nothere.yaml" in message and "cannot read suite" in message


def test_a_repository_suite_copied_elsewhere_keeps_its_include(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 19 item 20: include: _classification.yaml was looked up beside the copy only
    monkeypatch.delenv("PEFTBENCH_SUITES", raising=False)
    copy = write(tmp_path, "mine.yaml", (REPO_SUITES / "noisy-text-smoke.yaml").read_text())
    assert load_suite(str(copy)).train == load_suite("noisy-text-smoke").train
    by_name = write(tmp_path, "more.yaml", "include: noisy-text-smoke\nname: more\nseeds: [0, 1]\n")
    suite = load_suite(str(by_name))
    assert suite.name == "more" and suite.seeds == (0, 1)
    assert [m.id for m in suite.methods] == [m.id for m in load_suite("noisy-text-smoke").methods]


def test_a_suite_file_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert suite_error(path) == f"{path}: not UTF-8 text (byte 0xe9 at offset 9)"


def test_merge_does_not_mutate_inputs() -> None:
    base = {"a": {"x": 1, "y": 2}, "b": [1]}
    child = {"a": {"y": 3}, "b": [2], "c": 4}
    assert merge(base, child) == {"a": {"x": 1, "y": 3}, "b": [2], "c": 4}
    assert base == {"a": {"x": 1, "y": 2}, "b": [1]}


# --- unknown keys, malformed YAML --------------------------------------------------------

def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", BASIC + "sedes: [3]\n")
    message = suite_error(path)
    assert message.startswith(str(path))
    assert "unknown key 'sedes'" in message
    assert "did you mean 'seeds'" in message


def test_unknown_nested_key_names_file_path_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", BASIC.replace("max_train: 100", "max_trian: 100"))
    message = suite_error(path)
    assert message.startswith(str(path))
    assert "tasks.trec" in message
    assert "'max_trian'" in message
    assert "did you mean 'max_train'" in message


def test_task_kind_picks_the_task_spec(tmp_path: Path) -> None:
    # kind: defaults to classification and may be said; an unknown kind is a one-line error
    suite = load_suite(str(write(tmp_path, "s.yaml", BASIC.replace("max_train: 100", "kind: classification"))))
    assert [type(t).__name__ for t in suite.tasks] == ["TaskSpec", "TaskSpec"]
    assert suite.tasks[0].KIND == "classification"
    message = suite_error(write(tmp_path, "b.yaml", BASIC.replace("max_train: 100", "kind: generatoin")))
    assert "tasks.trec.kind: unknown task kind 'generatoin'" in message
    assert "did you mean 'generation'" in message


def test_unknown_key_in_train_and_noise(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", BASIC.replace("epochs: 2", "epohcs: 2"))
    message = suite_error(path)
    assert f"{path}: train" in message and "did you mean 'epochs'" in message
    path = write(tmp_path, "n.yaml", BASIC.replace("rate: 0.2", "rat: 0.2"))
    message = suite_error(path)
    assert "noise[1]" in message and "did you mean 'rate'" in message


def test_unknown_key_in_method_train_block(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", BASIC.replace("train: {lr: 2.0e-3}", "train: {lrr: 2.0e-3}"))
    message = suite_error(path)
    assert "methods.fast-lora.train" in message and "did you mean 'lr'" in message


def test_malformed_yaml_gives_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\ntasks:\n  trec: {dataset: trec\nmethods: {}\n")
    message = suite_error(path)
    assert message.startswith(f"{path}:")
    line = message[len(str(path)) + 1:].split(":")[0]
    assert line.isdigit() and 3 <= int(line) <= 4  # the unclosed flow mapping of line 3
    assert "malformed YAML" in message


def test_malformed_yaml_bad_indentation(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\ntrain:\n  epochs: 2\n lr: 0.1\n")
    assert suite_error(path).startswith(f"{path}:4: malformed YAML")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "list.yaml", "- a\n- b\n")
    assert "mapping at the top level" in suite_error(path)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("epochs: 2", "epochs: two", "train.epochs: expected int, got 'two'"),
    ("epochs: 2", "epochs: true", "train.epochs: expected int, got True"),
    ("epochs: 2", "epochs: -1", "epochs must be >= 0 and batch sizes >= 1"),
    ("seeds: [0, 1]", "seeds: [0, x]", "seeds must be a non-empty list of integers"),
    ("seeds: [0, 1]", "seeds: 3", "seeds: expected a list"),
    ("rate: 0.2", "rate: 1.5", "noise[1]"),
    ("kind: symmetric", "kind: symetric", "noise[1]"),
    ("max_train: 100", "max_train: many", "tasks.trec.max_train: expected"),
    # issue 19 item 11: these passed validation (-5 trained on all rows but five; 0 and 2.0 failed
    # inside the tokenizer; max_length 0 meant no truncation; nan trained on nan)
    ("max_train: 100", "max_train: -5", "tasks.trec: max_train must be >= 1 (or left out for every row), got -5"),
    ("max_train: 100", "max_train: 0", "tasks.trec: max_train must be >= 1"),
    ("max_train: 100", "max_train: 100\n    max_test: 0", "max_test must be >= 1"),
    ("max_train: 100", "max_train: 100\n    val_fraction: 2.0", "val_fraction must be between 0 and 1 (exclusive)"),
    ("max_train: 100", "max_train: 100\n    max_length: 0", "max_length must be >= 1 token, got 0"),
    ("lr: 1.0e-3", "lr: .nan", "Invalid lr nan"),
    ("lr: 1.0e-3", "lr: 1.0e-3\n  head_lr: .inf", "Invalid head_lr inf: must be a finite number >= 0"),
    ("lr: 1.0e-3", "lr: 1.0e-3\n  weight_decay: -0.1", "Invalid weight_decay -0.1"),
])
def test_bad_values_are_one_line_errors(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in BASIC
    path = write(tmp_path, "s.yaml", BASIC.replace(old, new, 1))
    assert expected in suite_error(path)


def test_task_and_method_entries_must_be_mappings(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "tasks: {trec: trec}\nmethods: {lora: {}}\n")
    assert "tasks.trec" in suite_error(path)
    path = write(tmp_path, "m.yaml", "tasks: {trec: {dataset: trec}}\nmethods: {lora: [1]}\n")
    assert "methods.lora" in suite_error(path)


def test_empty_tasks_or_methods(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "methods: {lora: {}}\n")
    assert "'tasks' must be a non-empty mapping" in suite_error(path)
    path = write(tmp_path, "m.yaml", "tasks: {trec: {dataset: trec}}\nmethods: []\n")
    assert "'methods' must be a non-empty mapping" in suite_error(path)


def test_truth_field_with_synthetic_noise_is_rejected(tmp_path: Path) -> None:
    text = BASIC.replace("max_train: 100", "truth_field: clean_label")
    message = suite_error(write(tmp_path, "s.yaml", text))
    assert "trec" in message and "truth_field" in message
    # with noise kind none only, the same task is fine
    ok = text.replace("  - {kind: symmetric, rate: 0.2}\n", "")
    assert load_suite(str(write(tmp_path, "ok.yaml", ok))).tasks[0].truth_field == "clean_label"


# --- --set overrides ---------------------------------------------------------------------

def test_apply_override_parses_values_as_yaml() -> None:
    raw: dict = {"train": {"epochs": 3}}
    apply_override(raw, "train.epochs=5")
    apply_override(raw, "train.lr=1")
    apply_override(raw, "seeds=[0,1]")
    apply_override(raw, "tasks.trec.max_train=20")  # creates the missing mappings
    apply_override(raw, "name=a=b")  # only the first '=' splits
    assert raw == {"train": {"epochs": 5, "lr": 1}, "seeds": [0, 1],
                   "tasks": {"trec": {"max_train": 20}}, "name": "a=b"}


@pytest.mark.parametrize("assignment", ["train.epochs", "=3", ""])
def test_apply_override_needs_key_and_value(assignment: str) -> None:
    with pytest.raises(BenchError, match="key=value"):
        apply_override({}, assignment)


def test_apply_override_through_a_scalar_is_an_error() -> None:
    with pytest.raises(BenchError, match="'train.epochs' is not a mapping"):
        apply_override({"train": {"epochs": 3}}, "train.epochs.x=1")


def test_set_overrides_are_type_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", BASIC)
    message = suite_error(path, "train.epochs=two")
    assert "train.epochs: expected int, got 'two'" in message
    suite = load_suite(str(path), ("train.lr=1", "seeds=[3,4]", "train.epochs=7"))
    assert suite.train.lr == 1.0 and isinstance(suite.train.lr, float)
    assert suite.train.epochs == 7
    assert suite.seeds == (3, 4)
    assert "did you mean 'max_train'" in suite_error(path, "tasks.trec.max_trian=3")


def test_exponent_without_a_dot_is_a_float(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-4 as the string '1e-4': "expected float, got '1e-4'" with no hint (issue 19 item 11)
    path = write(tmp_path, "s.yaml", BASIC.replace("lr: 1.0e-3", "lr: 1e-4"))
    assert load_suite(str(path)).train.lr == 1e-4
    assert load_suite(str(path), ("train.lr=5E-3",)).train.lr == 5e-3
    assert "train.lr: expected float, got 'fast'" in suite_error(path, "train.lr=fast")


def test_int_widens_to_float_but_float_does_not_narrow() -> None:
    assert build(TrainConfig, {"lr": 1}, "x").lr == 1.0
    assert isinstance(build(TrainConfig, {"lr": 1}, "x").lr, float)
    with pytest.raises(BenchError, match=r"x\.epochs: expected int, got 1\.5"):
        build(TrainConfig, {"epochs": 1.5}, "x")
    assert build(TrainConfig, {"head_lr": None}, "x").head_lr is None
    assert build(TrainConfig, {"head_lr": 1}, "x").head_lr == 1.0


def test_precedence_defaults_suite_entry_set(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", """\
train: {epochs: 2, batch_size: 16}
tasks: {trec: {dataset: trec}}
methods:
  plain: {method: lora}
  tuned:
    method: lora
    train: {epochs: 5, lr: 0.01}
""")
    suite = load_suite(str(path))
    plain, tuned = suite.methods
    # defaults < suite
    assert suite.train_for(plain) == TrainConfig(epochs=2, batch_size=16)
    assert suite.train_for(plain).warmup_ratio == TrainConfig().warmup_ratio
    # suite < grid entry
    assert suite.train_for(tuned) == TrainConfig(epochs=5, batch_size=16, lr=0.01)
    # grid entry < --set: a --set on the suite's train block wins over every entry
    suite = load_suite(str(path), ("train.epochs=1", "train.batch_size=4"))
    plain, tuned = suite.methods
    assert suite.train_for(plain) == TrainConfig(epochs=1, batch_size=4)
    assert suite.train_for(tuned) == TrainConfig(epochs=1, batch_size=4, lr=0.01)
    # and a --set aimed at one entry changes only that entry
    suite = load_suite(str(path), ("methods.tuned.train.lr=0.5",))
    plain, tuned = suite.methods
    assert suite.train_for(plain).lr == TrainConfig().lr
    assert suite.train_for(tuned) == TrainConfig(epochs=5, batch_size=16, lr=0.5)


def test_set_on_method_entry_is_type_checked_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", BASIC)
    message = suite_error(path, "methods.fast-lora.train.epochs=x")
    assert "methods.fast-lora.train.epochs: expected int" in message


# --- suite names -------------------------------------------------------------------------

def test_unknown_suite_name_did_you_mean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTBENCH_SUITES", str(tmp_path))
    write(tmp_path, "noisy-text.yaml", BASIC)
    write(tmp_path, "_fragment.yaml", "train: {epochs: 1}\n")
    assert suite_names() == ["noisy-text"]  # fragments are not suites
    assert load_suite("noisy-text").name == "tiny"
    with pytest.raises(BenchError) as info:
        load_suite("noisy-txt")
    assert str(info.value) == "unknown suite 'noisy-txt' (did you mean 'noisy-text'?)"


def test_unknown_yaml_path_is_unknown_suite(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="unknown suite"):
        load_suite(str(tmp_path / "missing.yaml"))


def test_repository_suites_load() -> None:
    suite = load_suite("noisy-text-smoke")
    assert suite.name == "noisy-text-smoke"
    assert {m.id for m in suite.methods} >= {"lora", "full-ft"}
    assert suite.train.epochs == 3  # the suite overrides its fragment's 4


def test_cell_labels_name_real_noise_as_such() -> None:
    from bench.spec.cells import plan

    labels = [cell.label for cell in plan(load_suite("noisy-real"))]
    assert labels[0] == "hausa real-noise lora seed0" and not any(" clean " in label for label in labels)


@pytest.mark.parametrize(("old", "new"), [
    ("name: tiny", "name: ../../escape_suite"),
    ("name: tiny", "name: ''"),
    ("name: tiny", "name: a/b"),
    ("name: tiny", "name: " + "x" * 300),
    ("  fast-lora:", "  ../../x:"),
    ("  fast-lora:", "  '..':"),
])
def test_names_that_become_folders_are_checked(tmp_path: Path, old: str, new: str) -> None:
    # a suite name and a method id are folders of the store: nothing may escape it or be empty
    message = suite_error(write(tmp_path, "s.yaml", BASIC.replace(old, new)))
    assert "cannot name a folder" in message


def test_report_refuses_a_suite_name_outside_reports(tmp_path: Path) -> None:
    from bench import api

    with pytest.raises(BenchError, match="cannot name a folder"):
        api.build_report("../../elsewhere", results=tmp_path, reports=tmp_path / "reports")


def test_duplicate_yaml_keys_are_errors_with_their_line(tmp_path: Path) -> None:
    # plain YAML keeps the last of two equal keys silently; a suite file refuses them
    path = write(tmp_path, "s.yaml", BASIC.replace("    max_train: 100", "    max_train: 100\n    max_train: 200"))
    message = suite_error(path)
    assert message.startswith(f"{path}:11: malformed YAML") and "duplicate key 'max_train'" in message
    # merge keys (<<: *anchor) are not duplicates, and a key may override what they merge
    text = BASIC.replace("  fast-lora:\n    method: lora\n",
                         "  fast-lora:\n    <<: &base {method: lora}\n    method: lora\n")
    assert load_suite(str(write(tmp_path, "m.yaml", text))).methods[1].method == "lora"


def test_duplicate_seeds_are_errors(tmp_path: Path) -> None:
    message = suite_error(write(tmp_path, "s.yaml", BASIC.replace("seeds: [0, 1]", "seeds: [0, 1, 0]")))
    assert "repeat a seed" in message
