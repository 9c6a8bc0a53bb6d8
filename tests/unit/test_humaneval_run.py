"""HumanEval in a generation suite: the opt-in, the eval path end to end, the generation wrapper, validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.evaluate import code, sandbox
from bench.evaluate.humaneval import load_problems, truncate_at_stop
from bench.spec.generation import HumanEvalSpec
from bench.spec.suite import load_suite
from tests.causal_helpers import write_jsonl

SUITE = """\
name: he-toy
model: random:tiny-llama
train: {{epochs: 1, batch_size: 4, eval_batch_size: 4, lr: 1.0e-3, precision: fp32}}
tasks:
  code:
    kind: generation
    dataset: code
    format: alpaca
    max_train: 6
    max_val: 2
    max_length: 64
    evals:
      humaneval: {{{humaneval}}}
methods:
  lora: {{config: {{r: 2, alpha: 4}}}}
"""
#: The seeded 5-problem subset (bench.evaluate.lm_tasks.subsample(164, 5)); the same for every cell.
SUBSET = [13, 30, 74, 88, 112]


def write_suite(tmp_path: Path, humaneval: str = "task: humaneval, max_items: 5, max_gen_toks: 8") -> Path:
    path = tmp_path / "he-toy.yaml"
    path.write_text(SUITE.format(humaneval=humaneval))
    return path


def data_dir(root: Path) -> Path:
    rows = [{"instruction": f"Return {i}.", "input": "", "output": f"def f():\n    return {i}"} for i in range(10)]
    write_jsonl(root / "code" / "train.jsonl", rows)
    return root


@pytest.fixture(scope="module")
def isolated() -> None:
    problem = sandbox.isolation_problem()
    if problem is not None:
        pytest.skip(f"no isolation on this kernel: {problem}")


def test_run_refuses_without_opt_in_and_stores_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    kept = results / "he-toy" / "lora" / "abc.json"
    kept.parent.mkdir(parents=True)
    kept.write_text('{"stored": "before"}')
    args = ["run", "--suite", str(write_suite(tmp_path)), "--data-dir", str(data_dir(tmp_path / "data")),
            "--results-dir", str(results), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == ("error: suite 'he-toy' runs model-written code (code.humaneval); pass --allow-code-execution "
                   "to run it in the sandbox (docs/sandbox.md)\n")
    assert sorted(p.name for p in results.rglob("*") if p.is_file()) == ["abc.json"]
    assert kept.read_text() == '{"stored": "before"}'
    from bench import api  # the library refuses too, before any cell runs

    with pytest.raises(BenchError, match="--allow-code-execution"):
        api.run_suite(str(write_suite(tmp_path)), data_dir=tmp_path / "data", results=results, quiet=True)
    assert sorted(p.name for p in results.rglob("*") if p.is_file()) == ["abc.json"]


def fake_generator(kind: str) -> Any:
    """A ``make_generate_fn`` stand-in: canonical bodies (then a next def, cut by the stops) or ``pass``."""
    by_prompt = {p.prompt: p.canonical_solution for p in load_problems().values()}

    def make(model: Any, tokenizer: Any, spec: HumanEvalSpec, *, seed: int, meter: code.TokenMeter,
             **_: Any) -> Any:
        def generate(prompts: list[str], n: int) -> list[list[str]]:
            meter.tokens, meter.seconds = meter.tokens + 10 * len(prompts) * n, meter.seconds + 0.5
            body = (lambda p: by_prompt[p] + "\n\ndef unrelated():\n    return 0\n") if kind == "canonical" \
                else (lambda p: "    pass\n")
            return [[body(p)] * n for p in prompts]

        return generate

    return make


@pytest.mark.parametrize(("kind", "pass_at_1", "reasons"), [
    ("canonical", 1.0, {"passed": 5}),
    ("pass", 0.0, {"failed": 5}),
])
def test_humaneval_cell_end_to_end(isolated: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
                                   pass_at_1: float, reasons: dict[str, int]) -> None:
    monkeypatch.setattr(code, "make_generate_fn", fake_generator(kind))
    results, reports = tmp_path / "results", tmp_path / "reports"
    args = ["run", "--suite", str(write_suite(tmp_path)), "--data-dir", str(data_dir(tmp_path / "data")),
            "--results-dir", str(results), "--quiet", "--allow-code-execution", "--set", "train.epochs=0",
            "--in-process"]  # the patched generator runs in this process
    assert main(args) == 0
    (path,) = (results / "he-toy" / "lora").glob("*[0-9a-f].json")
    record = json.loads(path.read_text())
    assert record["status"] == "success", record["error"]
    assert record["metrics"]["humaneval_pass_at_1"] == pass_at_1
    assert record["diagnostics"]["evals"]["humaneval"] == {"n_items": 5.0, "n_samples": 1.0, "reasons": reasons}
    eff = record["efficiency"]
    assert eff["train_steps"] == 0  # epochs=0: the untrained adapter (the base model) is scored
    assert eff["eval_humaneval_gen_tokens"] == 50 and eff["eval_humaneval_gen_tokens_per_s"] == 100
    assert eff["gen_tokens"] == 50 and eff["eval_humaneval_wall_s"] >= eff["eval_humaneval_exec_wall_s"] > 0
    preds = np.load(path.with_name(path.stem + ".preds.npz"))
    assert preds["humaneval_problem"].tolist() == SUBSET
    assert preds["humaneval_passed"].tolist() == [[int(pass_at_1)]] * 5
    assert preds["humaneval_reason"].tolist() == [[next(iter(reasons))]] * 5
    if kind == "canonical":  # the stops cut the next top-level def off
        problems = load_problems()
        assert [c[0] for c in preds["humaneval_completion"].tolist()] == \
            [problems[f"HumanEval/{i}"].canonical_solution + "\n" for i in SUBSET]
    assert main(["report", "--suite", "he-toy", "--results-dir", str(results), "--reports-dir", str(reports)]) == 0
    board = (reports / "he-toy" / "leaderboard.md").read_text()
    assert "| method | humaneval pass@1 (%) ↑ | trainable params ↓" in board
    assert f"| {100 * pass_at_1:.2f} |" in board


@pytest.fixture(scope="module")
def tiny_llama() -> tuple[Any, Any]:
    from bench.models.causal import causal_base, load_causal_tokenizer

    return causal_base("random:tiny-llama", "fp32").new().eval(), load_causal_tokenizer("random:tiny-llama")


def _generate(model_tok: tuple[Any, Any], prompts: list[str], stops: tuple[str, ...], *, batch_size: int = 2,
              max_gen_toks: int = 12) -> tuple[list[str], int]:
    meter = code.TokenMeter()
    spec = HumanEvalSpec(max_gen_toks=max_gen_toks, batch_size=batch_size)
    out = code.make_generate_fn(*model_tok, spec, seed=0, meter=meter, stops=stops)(prompts, 1)
    return [o[0] for o in out], meter.tokens


def test_generation_stops_at_a_stop_sequence(tiny_llama: tuple[Any, Any]) -> None:
    prompts = ["def add(a, b):\n", "def longer_name(values: list[int]) -> int:\n    \"\"\"Sum.\"\"\"\n"]
    free, tokens = _generate(tiny_llama, prompts, ())
    assert tokens == 24  # no stop: 12 new tokens per row
    alone = [_generate(tiny_llama, [p], (), batch_size=1)[0][0] for p in prompts]
    assert free == alone  # left padding does not change greedy text
    stop = free[0][len(free[0]) // 2:][:3]  # a piece from the middle of row 0's text
    stopped, tokens = _generate(tiny_llama, prompts, (stop,))
    assert stop in stopped[0] and len(stopped[0]) < len(free[0]) and free[0].startswith(stopped[0])
    assert truncate_at_stop(stopped[0], (stop,)) == free[0][: free[0].find(stop)]
    assert tokens < 24


@pytest.mark.parametrize(("entry", "message"), [
    ("task: humaneval, n_samples: 0", "n_samples, batch_size and max_gen_toks must be >= 1"),
    ("task: humaneval, n_samples: 5", "n_samples 5 with temperature 0: greedy samples are identical"),
    ("task: humaneval, n_samples: 5, temperature: 0.8, k: [1, 10]",
     r"Invalid k \[1, 10\]: each k must be between 1 and n_samples \(5\)"),
    ("task: humaneval, k: []", r"Invalid k \[\]"),
    ("task: humaneval, temperature: 0.2, top_p: 0", "Invalid temperature 0.2, top_p 0.0"),
    ("task: humaneval, num_fewshot: 0", r"evals.humaneval: unknown key 'num_fewshot'"),
    ("task: humaneval, k: 1", r"evals.humaneval.k: expected a list, got 1"),
    ("task: mmlu_local, n_samples: 2", r"evals.humaneval: unknown key 'n_samples'"),
])
def test_malformed_humaneval_entries_are_one_line_errors(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(BenchError, match=message) as err:
        load_suite(str(write_suite(tmp_path, entry)))
    assert "\n" not in str(err.value)


def test_humaneval_entry_parses() -> None:
    spec = HumanEvalSpec(name="he", n_samples=10, temperature=0.8, k=(1, 10))
    assert (spec.top_p, spec.max_gen_toks, spec.timeout_s) == (0.95, 512, 5.0)
