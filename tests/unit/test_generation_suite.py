"""Generation tasks in suites: parsing, validation errors, and `bench run` / `bench report` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.spec.generation import EvalSpec, GenerationTaskSpec
from bench.spec.suite import load_suite
from tests.causal_helpers import tiny_data_dir

SUITE = """\
name: gen-toy
model: random:tiny-llama
train: {{epochs: 1, batch_size: 4, eval_batch_size: 4, lr: 1.0e-3, precision: fp32}}
tasks:
  gsm8k:
    kind: generation
    dataset: gsm8k
    max_train: 8
    max_val: 2
    max_length: 96
    evals:
      gsm8k: {{task: gsm8k_local, num_fewshot: 1, max_items: 2, max_gen_toks: 4, batch_size: 2}}
      mmlu_0shot: {{task: mmlu_local, num_fewshot: 0, max_items: 4}}
methods:
  {methods}
"""


def write(tmp_path: Path, methods: str = "lora: {config: {r: 2, alpha: 4}}", **extra: str) -> Path:
    text = SUITE.format(methods=methods)
    for key, value in extra.items():
        text += f"{key}: {value}\n"
    path = tmp_path / "gen-toy.yaml"
    path.write_text(text)
    return path


def test_generation_task_parses_with_named_evals(tmp_path: Path) -> None:
    suite = load_suite(str(write(tmp_path)), ("tasks.gsm8k.evals.gsm8k.max_items=3",))
    (task,) = suite.tasks
    assert isinstance(task, GenerationTaskSpec) and task.name == "gsm8k" and task.max_train == 8
    assert task.evals[0] == EvalSpec(task="gsm8k_local", name="gsm8k", num_fewshot=1, max_items=3,
                                     max_gen_toks=4, batch_size=2)
    assert [e.name for e in task.evals] == ["gsm8k", "mmlu_0shot"]


@pytest.mark.parametrize(("extra", "message"), [
    ({"noise": "[{kind: symmetric, rate: 0.2}]"}, "generation task; it takes noise kind none"),
])
def test_generation_task_rejects_noise(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    with pytest.raises(BenchError, match=message):
        load_suite(str(write(tmp_path, **extra)))


def test_unknown_eval_key_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"evals.gsm8k: unknown key 'max_item' \(did you mean 'max_items'\?\)"):
        load_suite(str(write(tmp_path)), ("tasks.gsm8k.evals.gsm8k.max_item=3",))


def test_validate_rejects_methods_without_generation_support(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_data_dir(tmp_path / "data")
    path = write(tmp_path, methods="lora: {}\n  small-loss: {}")
    assert main(["validate", str(path), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: method 'small-loss' does not train causal LMs yet (supports: classification); "
                   "task 'gsm8k' is a generation task")
    assert main(["validate", str(write(tmp_path)), "--data-dir", str(data), "--set",
                 "tasks.gsm8k.evals.gsm8k.task=gsm8k_locl"]) == 2
    assert "unknown lm-eval task 'gsm8k_locl'" in capsys.readouterr().err


def test_run_and_report_a_generation_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, results, reports = tiny_data_dir(tmp_path / "data"), tmp_path / "results", tmp_path / "reports"
    path = write(tmp_path)
    args = ["--suite", str(path), "--data-dir", str(data), "--results-dir", str(results), "--quiet"]
    assert main(["run", *args]) == 0
    (record_path,) = (results / "gen-toy" / "lora").glob("*[0-9a-f].json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "success", record["error"]
    m, eff = record["metrics"], record["efficiency"]
    assert {"gsm8k_exact_match_strict_match", "gsm8k_exact_match_flexible_extract", "mmlu_0shot_acc",
            "mmlu_0shot_ece"} <= set(m)
    assert m["reload_max_abs_diff"] <= 1e-5
    assert {"train_tokens", "eval_gsm8k_wall_s", "eval_mmlu_0shot_wall_s", "gen_tokens_per_s", "eval_wall_s",
            "trainable_params", "adapter_bytes"} <= set(eff)
    assert record["diagnostics"]["lm_eval"]["tasks_hash"] == record["spec"]["task"]["lm_eval_tasks_hash"]
    assert record["diagnostics"]["evals"]["mmlu_0shot"] == {"n_items": 4.0, "num_fewshot": 0.0}
    assert record["curves"]["epoch"] == [1] and len(record["curves"]["val_loss"]) == 1
    assert record_path.with_name(record_path.stem + ".preds.npz").exists()
    assert main(["run", *args]) == 0  # stored: skipped
    assert "0 ran, 1 skipped" in capsys.readouterr().out
    assert main(["report", "--suite", "gen-toy", "--results-dir", str(results), "--reports-dir", str(reports)]) == 0
    board = (reports / "gen-toy" / "leaderboard.md").read_text()
    assert "## Generation" in board and "## Results" not in board
    assert "| method | gsm8k EM strict (%) ↑ | gsm8k EM flexible (%) ↑ | mmlu_0shot acc (%) ↑ | mmlu_0shot ECE (%) ↓" \
        in board
    assert record["run_id"] in board
    # bench compare scores generation records by their own metrics; a store against itself: no change
    assert main(["compare", str(results), str(results), "--fail", "mmlu_0shot_acc:-1pp"]) == 0
    out = capsys.readouterr().out
    assert "mmlu_0shot_acc" in out and "gsm8k_exact_match_strict_match" in out and "gate passed" in out


def test_a_methods_own_diagnostics_reach_the_record(tmp_path: Path) -> None:
    data, results = tiny_data_dir(tmp_path / "data"), tmp_path / "results"
    path = write(tmp_path, methods="lora-dropout: {config: {r: 2, alpha: 4, p: 0.1, ensemble: 2}}")
    assert main(["run", "--suite", str(path), "--data-dir", str(data), "--results-dir", str(results), "--quiet"]) == 0
    (record_path,) = (results / "gen-toy" / "lora-dropout").glob("*[0-9a-f].json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "success", record["error"]
    own = record["diagnostics"]["method"]
    assert own["ensemble"] == 2
    assert own["mask_sparsity_expected"] == pytest.approx(2 * 0.1 - 0.1 ** 2)  # 0.19
    assert 0.0 < own["mask_sparsity_train"] < 1.0
