"""Tests for bench.cli: exit codes, one-line errors, and a torch-free ``bench ls``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import bench.run.runner
from bench.cli import main
from bench.spec.suite import suite_names

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``error: ...`` line a failing command writes to stderr."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any cell would be executed."""
    def forbidden(*_: Any, **__: Any) -> None:
        raise AssertionError("a cell was executed")

    monkeypatch.setattr(bench.run.runner, "run_cell", forbidden)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir with one small dataset ``toyds``."""
    folder = tmp_path / "data" / "toyds"
    folder.mkdir(parents=True)
    (folder / "labels.json").write_text('["a", "b"]')
    for split, n in (("train", 20), ("test", 6)):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": f"{split} {i}", "label": i % 2}) + "\n" for i in range(n)))
    return tmp_path / "data"


def write_suite(tmp_path: Path, methods: str = "lora: {}") -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(f"name: toy\ntasks:\n  toy: {{dataset: toyds}}\nmethods: {{{methods}}}\n"
                    "train: {epochs: 1}\n")
    return path


# --- ls ----------------------------------------------------------------------------------

def test_ls_does_not_import_torch() -> None:
    code = ("import sys; from bench.cli import main; rc = main(['ls']); "
            "assert 'torch' not in sys.modules, 'ls imported torch'; "
            "assert not [m for m in sys.modules if m.startswith('methods.')]; "
            "rc2 = main(['run', '--suite', 'nosuch-suite']); "
            "assert 'torch' not in sys.modules, 'a suite typo imported torch'; "
            "print('rc', rc, rc2)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.strip().endswith("rc 0 2")
    for heading in ("suites:", "methods:", "datasets:", "models:"):
        assert heading in out
    assert "noisy-text-smoke" in out and "lora" in out
    assert "error: unknown suite 'nosuch-suite'" in result.stderr


def test_ls_lists_suites_methods_datasets(tmp_path: Path, data_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "beta.yaml").write_text("")
    (suites / "alpha.yaml").write_text("")
    (suites / "_fragment.yaml").write_text("")
    monkeypatch.setenv("PEFTBENCH_SUITES", str(suites))
    assert main(["ls", "--data-dir", str(data_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "suites:   alpha, beta"
    assert lines[1].startswith("methods:  ")
    assert {"lora", "full-ft"} <= set(lines[1][len("methods:  "):].split(", "))
    assert lines[2] == f"datasets: toyds  ({data_dir})"
    assert lines[3].startswith("models:   minilm")


def test_ls_one_kind_and_missing_data_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "datasets", "--data-dir", "/nonexistent/data"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("datasets: none (no data directory found (looked in: /nonexistent/data)")
    assert len(out.splitlines()) == 1


# --- run: user errors exit 2 before anything runs -----------------------------------------

def test_run_unknown_suite(capsys: pytest.CaptureFixture[str], nothing_runs: None) -> None:
    assert "noisy-text-smoke" in suite_names()
    assert main(["run", "--suite", "noisy-text-smok"]) == 2
    assert one_error_line(capsys) == \
        "error: unknown suite 'noisy-text-smok' (did you mean 'noisy-text-smoke'?)"
    assert main(["run", "--suite", "nosuch"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: unknown suite 'nosuch' (")
    assert "noisy-text-smoke" in line  # no close match: the known names are listed


def test_run_unknown_method_fails_before_running(tmp_path: Path, data_dir: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 nothing_runs: None) -> None:
    suite = write_suite(tmp_path, "lora: {}, lroa: {}")
    results = tmp_path / "results"
    rc = main(["run", "--suite", str(suite), "--data-dir", str(data_dir),
               "--results-dir", str(results), "--quiet"])
    assert rc == 2
    assert one_error_line(capsys) == "error: unknown method 'lroa' (did you mean 'lora'?)"
    assert not results.exists() or not any(results.rglob("*"))


def test_run_into_a_results_dir_that_is_a_file_fails_before_training(
        tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], nothing_runs: None) -> None:
    results = tmp_path / "results"
    results.write_text("not a folder")
    rc = main(["run", "--suite", str(write_suite(tmp_path)), "--data-dir", str(data_dir),
               "--results-dir", str(results), "--quiet"])
    assert rc == 2  # issue 19 item 8: before, the cell trained and the store write raised a traceback
    assert one_error_line(capsys) == (f"error: cannot write results to {results}/toy (Not a directory); "
                                      "pass a writable --results-dir or free space")
    assert results.read_text() == "not a folder"


def fake_result(cell: Any) -> Any:
    from bench.results.record import RunRecord, now
    from bench.run.cell import CellResult

    record = RunRecord(run_id=cell.run_id, spec=cell.spec, env={}, status="success", started_at=now(),
                       finished_at=now(), metrics={"accuracy": 0.5, "macro_f1": 0.5, "ece": 0.1})
    return CellResult(record)


def test_a_store_write_that_fails_after_training_keeps_the_record(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    import bench.results.store

    def full(*_: Any, **__: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bench.results.store.Store, "write", full)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(bench.run.runner, "run_cell", lambda cell, *_: fake_result(cell))
    rc = main(["run", "--suite", str(write_suite(tmp_path)), "--data-dir", str(data_dir),
               "--results-dir", str(tmp_path / "results"), "--in-process"])  # the patched cell runs here
    out = capsys.readouterr().out
    assert rc == 1 and "NOT STORED" in out and "No space left on device" in out
    (saved,) = tmp_path.glob("peftbench-unstored-*.json")
    assert json.loads(saved.read_text())["status"] == "success"


def test_report_takes_the_suite_file_that_run_took(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench.run.runner, "run_cell", lambda cell, *_: fake_result(cell))
    suite, results, reports = write_suite(tmp_path), tmp_path / "results", tmp_path / "reports"
    store = ["--results-dir", str(results)]
    assert main(["run", "--suite", str(suite), "--data-dir", str(data_dir), "--quiet", "--in-process", *store]) == 0
    # issue 19 item 20: before, "error: bench report: suite name '/…/toy.yaml' cannot name a folder"
    assert main(["report", "--suite", str(suite), *store, "--reports-dir", str(reports)]) == 0
    assert (reports / "toy" / "leaderboard.md").is_file()  # named by the file's name:, as the store is
    capsys.readouterr()
    assert main(["report", "--suite", str(tmp_path / "missing.yaml"), *store]) == 2
    assert one_error_line(capsys).startswith("error: unknown suite")


def test_small_loss_warm_up_through_the_last_epoch_is_refused(
        tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # issue 19 item 20: warm-up >= epochs never trains on the selection: it silently equalled LoRA
    suite = write_suite(tmp_path, "small-loss: {config: {warmup_epochs: 1}}")  # the suite trains 1 epoch
    assert main(["validate", str(suite), "--data-dir", str(data_dir)]) == 2
    assert one_error_line(capsys) == (
        "error: toy: methods.small-loss: warmup_epochs 1 >= train.epochs 1: selection would start after the "
        "last epoch and small-loss would train as plain LoRA; lower warmup_epochs or train longer")
    assert main(["validate", str(suite), "--data-dir", str(data_dir), "--set", "train.epochs=2"]) == 0


def test_run_malformed_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            nothing_runs: None) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ntrain:\n  epochs: 2\n lr: 0.1\n")
    assert main(["run", "--suite", str(path)]) == 2
    assert one_error_line(capsys).startswith(f"error: {path}:4: malformed YAML")


def test_run_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         nothing_runs: None) -> None:
    path = write_suite(tmp_path)
    path.write_text(path.read_text().replace("dataset: toyds", "dataset: toyds, max_trian: 3"))
    assert main(["run", "--suite", str(path)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {path}: tasks.toy: unknown key 'max_trian'")
    assert line.endswith("(did you mean 'max_train'?)")


@pytest.mark.parametrize(("assignment", "expected"), [
    ("train.epochs=x", "train.epochs: expected int, got 'x'"),
    ("train.epochs", "--set expects key=value"),
    ("train.epocs=2", "did you mean 'epochs'"),
])
def test_run_bad_set(capsys: pytest.CaptureFixture[str], nothing_runs: None,
                     assignment: str, expected: str) -> None:
    assert main(["run", "--suite", "noisy-text-smoke", "--set", assignment]) == 2
    assert expected in one_error_line(capsys)


def test_run_missing_data_dir(capsys: pytest.CaptureFixture[str], nothing_runs: None) -> None:
    assert main(["run", "--suite", "noisy-text-smoke", "--data-dir", "/nonexistent"]) == 2
    line = one_error_line(capsys)
    assert "no data directory found" in line and "/nonexistent" in line


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["run"], ["ls", "bogus"], ["frobnicate"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert one_error_line(capsys).endswith("--help`)")  # one line, as every bad input, not the usage block


# --- validate ----------------------------------------------------------------------------

@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
def test_validate_all_repo_suites(capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEFTBENCH_SUITES", raising=False)
    assert main(["validate", "--all", "--data-dir", str(SHARED_DATA)]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = suite_names()
    assert [line.split(":")[0] for line in lines] == [f"ok  {n}" for n in names]
    # 1 task × 2 noise settings × 1 seed × 12 methods
    assert "ok  noisy-text-smoke: 24 cells" in lines


def test_validate_one_suite(tmp_path: Path, data_dir: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(tmp_path, "lora: {}, full-ft: {}")
    assert main(["validate", str(suite), "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out == f"ok  {suite}: 2 cells\n"  # named as given
    assert main(["validate", str(suite), "--data-dir", str(data_dir), "--set", "seeds=[0,1,2]"]) == 0
    assert capsys.readouterr().out == f"ok  {suite}: 6 cells\n"


def test_validate_catches_bad_method_config_and_missing_dataset(
        tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(tmp_path, "lora: {config: {alpah: 4}}")
    assert main(["validate", str(suite), "--data-dir", str(data_dir)]) == 2
    line = one_error_line(capsys)
    assert "methods.lora.config: unknown key 'alpah' (did you mean 'alpha'?)" in line
    suite.write_text(suite.read_text().replace("alpah", "alpha").replace("toyds", "toyd"))
    assert main(["validate", str(suite), "--data-dir", str(data_dir)]) == 2
    assert "dataset 'toyd' not found" in one_error_line(capsys)


def test_validate_missing_data_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--all", "--data-dir", "/nonexistent"]) == 2
    assert one_error_line(capsys) == ("error: no data directory found (looked in: /nonexistent); "
                                      "pass --data-dir or set PEFTBENCH_DATA_DIR")


# --- report ------------------------------------------------------------------------------

def test_report_without_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "results"
    empty.mkdir()
    reports = tmp_path / "reports"
    assert main(["report", "--suite", "nosuch", "--results-dir", str(empty),
                 "--reports-dir", str(reports)]) == 2
    line = one_error_line(capsys)
    assert line == f"error: no records for suite 'nosuch' in {empty}; run it first"
    assert not reports.exists()
