"""Bad data and unknown models fail `bench validate` with one line and exit 2, before any cell trains.

Issue 19 item 10: each of these passed `bench validate` ("ok"), then failed every cell at run time
(some with a traceback stored in the record).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import bench.run.runner
from bench.cli import main

ROWS = 20


def rows(n: int = ROWS) -> list[dict[str, Any]]:
    return [{"text": f"row {i}", "label": i % 2} for i in range(n)]


def jsonl(items: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in items)


def toy(tmp_path: Path, edit: Callable[[Path], None]) -> Path:
    folder = tmp_path / "data" / "toyds"
    folder.mkdir(parents=True)
    (folder / "labels.json").write_text('["a", "b"]')
    (folder / "train.jsonl").write_text(jsonl(rows()))
    (folder / "test.jsonl").write_text(jsonl(rows(6)))
    edit(folder)
    return tmp_path / "data"


def with_row(row: Any) -> Callable[[Path], None]:
    """Replace the third training row with ``row`` (a dict, or raw text for the whole line)."""
    def edit(folder: Path) -> None:
        lines = (folder / "train.jsonl").read_text().splitlines(keepends=True)
        lines[2] = row if isinstance(row, str) else json.dumps(row) + "\n"
        (folder / "train.jsonl").write_text("".join(lines))
    return edit


def write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return edit


def remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def latin1_row(folder: Path) -> None:
    path = folder / "train.jsonl"
    path.write_bytes(path.read_bytes().replace(b"row 2", b"caf\xe9"))  # é as one latin-1 byte


CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("no labels.json", remove("labels.json"), "toyds: no labels.json"),
    ("labels.json not JSON", write("labels.json", '["a", "b"'), "labels.json: not valid JSON"),
    ("one-class labels.json", write("labels.json", '["a"]'), "expected a list of at least two class names"),
    ("labels.json names repeat", write("labels.json", '["a", "a"]'), "class names must be distinct non-empty strings"),
    ("labels.json numbers", write("labels.json", "[0, 1]"), "class names must be distinct non-empty strings"),
    ("labels.json latin-1", write("labels.json", '["caf\xe9", "b"]'.encode("latin-1")), "labels.json: not UTF-8"),
    ("label out of range", with_row({"text": "x", "label": 5}), "train.jsonl:3: label 5 out of range [0, 2)"),
    ("label a string", with_row({"text": "x", "label": "1"}), "train.jsonl:3: label '1' out of range"),
    ("label a float", with_row({"text": "x", "label": 1.0}), "train.jsonl:3: label 1.0 out of range"),
    ("label a bool", with_row({"text": "x", "label": True}), "train.jsonl:3: label True out of range"),
    ("label missing", with_row({"text": "x"}), "train.jsonl:3: no field 'label' (fields: text)"),
    ("text missing", with_row({"label": 0}), "train.jsonl:3: no field 'text' (fields: label)"),
    ("blank text", with_row({"text": "  ", "label": 0}), "train.jsonl:3: empty or non-string text"),
    ("text a number", with_row({"text": 7, "label": 0}), "train.jsonl:3: empty or non-string text"),
    ("bad JSON line", with_row('{"text": "x", "label": 0\n'), "train.jsonl:3: not valid JSON"),
    ("a line that is a list", with_row('["x", 0]\n'), "train.jsonl:3: expected a JSON object (one row), got list"),
    ("latin-1 byte", latin1_row, "train.jsonl: not UTF-8"),
    ("empty split", write("test.jsonl", "\n"), "test.jsonl: split 'test' is empty"),
    ("no test split", remove("test.jsonl"), "toyds: no split 'test' (files: train.jsonl)"),
]


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_: Any, **__: Any) -> None:
        raise AssertionError("a cell was executed")

    monkeypatch.setattr(bench.run.runner, "run_cell", forbidden)


def suite_file(tmp_path: Path, model: str = "minilm") -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(f"name: toy\nmodel: {model}\ntasks:\n  toy: {{dataset: toyds}}\nmethods: {{lora: {{}}}}\n"
                    "train: {epochs: 1}\n")
    return path


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(("case", "edit", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_data_fails_validate_and_run_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         nothing_runs: None, case: str,
                                                         edit: Callable[[Path], Any], message: str) -> None:
    data, suite = toy(tmp_path, edit), suite_file(tmp_path)
    files = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    assert main(["validate", str(suite), "--data-dir", str(data)]) == 2
    assert message in error_line(capsys)
    results = tmp_path / "results"
    assert main(["run", "--suite", str(suite), "--data-dir", str(data), "--results-dir", str(results),
                 "--quiet"]) == 2
    assert message in error_line(capsys)
    assert not results.exists() or not any(p.is_file() for p in results.rglob("*"))  # nothing stored
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == files      # nothing touched


def test_a_byte_order_mark_is_read_as_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.data.task import load_task
    from bench.spec.suite import TaskSpec

    def bom(folder: Path) -> None:
        for name in ("train.jsonl", "labels.json"):
            path = folder / name
            path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    data = toy(tmp_path, bom)
    assert main(["validate", str(suite_file(tmp_path)), "--data-dir", str(data)]) == 0
    task = load_task(TaskSpec(name="toy", dataset="toyds", val_fraction=0.25), data)
    assert task.label_names == ["a", "b"] and len(task.train.texts) + len(task.val.texts) == ROWS


@pytest.mark.parametrize(("model", "message"), [
    ("minlm", "model 'minlm' is not a folder, not known here and not in the local HF cache "
              "(did you mean 'minilm'?); hub downloads are off unless PEFTBENCH_HUB=1"),
    ("nosuch/model", "(known: minilm, random:minilm-shape, random:tiny-bert, smollm2, random:tiny-llama, "
                     "random:smollm2-shape, an HF model folder)"),
    ("random:tiny", "unknown random preset 'tiny' (did you mean 'tiny-bert'?)"),
    ("random:tiny-lama", "unknown random preset 'tiny-lama' (did you mean 'tiny-llama'?)"),  # causal presets too
])
def test_an_unknown_model_fails_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, model: str, message: str) -> None:
    monkeypatch.delenv("PEFTBENCH_HUB", raising=False)
    data = toy(tmp_path, lambda folder: None)
    assert main(["validate", str(suite_file(tmp_path, model)), "--data-dir", str(data)]) == 2
    assert message in error_line(capsys)


def test_gold_labels_left_unnamed_are_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               nothing_runs: None) -> None:
    # issue 19 item 13: without truth_field the clean_label column was ignored and the detection
    # table was scored against an all-clean truth
    def gold(folder: Path) -> None:
        noisy = [{**r, "clean_label": (r["label"] + (i < 5)) % 2} for i, r in enumerate(rows())]
        (folder / "train.jsonl").write_text(jsonl(noisy))

    data = toy(tmp_path, gold)
    assert main(["validate", str(suite_file(tmp_path)), "--data-dir", str(data)]) == 2
    assert error_line(capsys).endswith(
        "train.jsonl: 'clean_label' differs from 'label' in 5 of 20 rows (real label noise): set truth_field: "
        "clean_label to score against it, or label_field: clean_label to train on it")


def test_real_noise_block_is_measured_from_the_data() -> None:
    from bench.data.noise import NoiseSpec, apply_noise, real_noise

    # labels as given [0, 1, 1, 0, 1], gold [0, 0, 1, 1, 1]: items 1 and 3 wrong -> rate 2/5
    given = apply_noise(NoiseSpec(kind="none"), [0, 1, 1, 0, 1], 2, seed=0)
    assert given.realised_rate == 0.0 and given.counts == [[2, 0], [0, 3]]  # what the record said before
    real = real_noise(given, [0, 0, 1, 1, 1], 2, "label vs clean_label")
    assert real.realised_rate == pytest.approx(0.4)
    assert real.counts == [[1, 1], [1, 2]] and real.matrix == [[0.5, 0.5], pytest.approx([1 / 3, 2 / 3])]
    assert real.truly_clean.tolist() == [True, False, True, False, True]
    assert real.info["real"] == "label vs clean_label" and real.info["kind"] == "none"


def test_hausa_noise_block_gives_the_data_s_own_rate() -> None:
    from bench.data.loaders import resolve_data_dir
    from bench.errors import BenchError
    from bench.kinds.classification import _encoded, _task, inject_noise
    from bench.spec.suite import load_suite

    try:
        data = resolve_data_dir(None)
    except BenchError:
        pytest.skip("no data directory")
    cell = next(c for c in bench.run.runner.resolve_suite(load_suite("noisy-real"), data)
                if c.cell.task.name == "hausa")
    task = _task(cell.cell.task, data)
    result, truly_clean = inject_noise(cell, task, _encoded(cell.cell.task, data, "minilm")[0], data)
    # ../shared/data/README.md: 50.4 % of Hausa's 2,045 distant labels are wrong (measured: 1,030 of
    # the 2,045 training rows; Hausa has its own validation split)
    assert result.realised_rate == pytest.approx(1 - truly_clean.mean())
    assert result.realised_rate == pytest.approx(0.5037, abs=1e-4)
    assert sum(map(sum, result.counts)) == len(truly_clean) == 2045 and int((~truly_clean).sum()) == 1030
