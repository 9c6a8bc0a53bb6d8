"""A suite's ``resources:`` (bench.spec.resources): per suite, task and method, validated, outside the run id."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.spec.cells import plan
from bench.spec.resources import Resources
from bench.spec.suite import load_suite

SUITE = """\
name: res
resources: {num_cpus: 2}
tasks:
  a: {dataset: trec}
  b: {dataset: trec, resources: {num_gpus: 1}}
methods:
  lora: {}
  big: {method: full-ft, resources: {num_cpus: 4}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "res.yaml"
    path.write_text(text)
    return path


def shapes(path: Path, *overrides: str) -> dict[tuple[str, str], Resources]:
    return {(c.task.name, c.method.id): c.resources for c in plan(load_suite(str(path), overrides))}


def test_precedence_defaults_suite_task_method_set(tmp_path: Path) -> None:
    path = write(tmp_path, SUITE)
    assert shapes(path) == {
        ("a", "lora"): Resources(num_cpus=2, num_gpus=0),   # the suite's
        ("a", "big"): Resources(num_cpus=4, num_gpus=0),    # the method's over the suite's
        ("b", "lora"): Resources(num_cpus=2, num_gpus=1),   # the task's beside the suite's
        ("b", "big"): Resources(num_cpus=4, num_gpus=1),    # task and method merge field by field
    }
    # --set outranks every entry's own block, as it does train:
    assert {r.num_cpus for r in shapes(path, "resources.num_cpus=1").values()} == {1.0}
    assert shapes(path, "resources.num_gpus=0.5")[("b", "big")].num_gpus == 0.5
    # without any resources: one CPU, no GPU
    plain = write(tmp_path, "name: p\ntasks: {a: {dataset: trec}}\nmethods: {lora: {}}\n")
    assert set(shapes(plain).values()) == {Resources(num_cpus=1.0, num_gpus=0.0)}
    assert Resources(num_cpus=2.5).threads == 2 and Resources(num_cpus=0.5).threads == 1


@pytest.mark.parametrize(("text", "message"), [
    ("resources: {num_gpu: 1}\n", r"res.yaml: resources: unknown key 'num_gpu' \(did you mean 'num_gpus'\?\)"),
    ("resources: {num_cpus: 0}\n", r"resources: Invalid num_cpus 0.0: must be a finite number > 0"),
    ("resources: {num_gpus: -1}\n", r"resources: Invalid num_gpus -1.0"),
    ("resources: {num_gpus: 1.5}\n", r"resources: Invalid num_gpus 1.5: above 1 it must be a whole number"),
    ("resources: {num_cpus: many}\n", r"resources.num_cpus: expected float, got 'many'"),
    ("resources: 2\n", r"resources: expected a mapping, got 2"),
])
def test_bad_resources_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "name: r\ntasks: {a: {dataset: trec}}\nmethods: {lora: {}}\n" + text)
    with pytest.raises(BenchError, match=message):
        load_suite(str(path))


def test_bad_entry_resources_name_their_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "name: r\ntasks: {a: {dataset: trec, resources: {gpus: 1}}}\nmethods: {lora: {}}\n")
    with pytest.raises(BenchError, match=r"tasks.a.resources: unknown key 'gpus'"):
        load_suite(str(path))
    path = write(tmp_path, "name: r\ntasks: {a: {dataset: trec}}\nmethods: {lora: {resources: {num_gpus: 2.5}}}\n")
    with pytest.raises(BenchError, match=r"methods.lora.resources: Invalid num_gpus 2.5"):
        load_suite(str(path))


def test_resources_leave_the_run_id_alone(tmp_path: Path) -> None:
    from bench.data.loaders import resolve_data_dir
    from bench.run.runner import resolve_suite

    try:
        data = resolve_data_dir()
    except BenchError as err:
        pytest.skip(f"no data: {err}")
    plain = write(tmp_path, "name: r\ntasks: {a: {dataset: trec, max_train: 50}}\nmethods: {lora: {}}\n")
    ids = [c.run_id for c in resolve_suite(load_suite(str(plain)), data)]
    asked = [c.run_id for c in resolve_suite(load_suite(str(plain), ("resources.num_gpus=1",)), data)]
    assert ids == asked
