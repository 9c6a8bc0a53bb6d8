"""Bad data files, stores, data dirs, ``compare``, ``report`` and generation tasks: one ``error:`` line, exit 2.

The second half of the bad-input table (the first, suites and flags, is test_bad_inputs.py). The
data cases add to test_bad_data.py's, not repeat them.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.bad_input_helpers import (
    GEN_TASK,
    RUN,
    VALIDATE,
    Case,
    World,
    check,
    gen,
    make_world,
    params,
    store_with_records,
    task,
    yml,
)

Edit = Callable[[World], None]


def line(split: str, text: str) -> Edit:
    """Replace the third line of ``<split>.jsonl`` with ``text`` (a JSON value or raw text)."""
    def edit(world: World) -> None:
        path = world.toyds / f"{split}.jsonl"
        lines = path.read_text().splitlines(keepends=True)
        lines[2] = text + "\n"
        path.write_text("".join(lines))
    return edit


def write(name: str, payload: str | bytes) -> Edit:
    def edit(world: World) -> None:
        path = world.toyds / name
        path.write_bytes(payload if isinstance(payload, bytes) else payload.encode())
    return edit


def as_folder(name: str) -> Edit:
    def edit(world: World) -> None:
        (world.toyds / name).unlink()
        (world.toyds / name).mkdir()
    return edit


def gzipped(payload: bytes) -> Edit:
    def edit(world: World) -> None:
        (world.toyds / "train.jsonl").unlink()
        (world.toyds / "train.jsonl.gz").write_bytes(payload)
    return edit


def with_gold(value: Any) -> Edit:
    """Give every training row ``clean_label`` = its label, the third row ``value`` (or none, for DROP)."""
    def edit(world: World) -> None:
        path = world.toyds / "train.jsonl"
        rows = [{**json.loads(t), "clean_label": json.loads(t)["label"]} for t in path.read_text().splitlines()]
        if value is None:
            del rows[2]["clean_label"]
        else:
            rows[2]["clean_label"] = value
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return edit


def a_file(name: str) -> Edit:
    return lambda world: (world.tmp / name).write_text("not a folder\n")


def store_file(world: World) -> None:
    (world.results / "other").write_text("not a folder\n")


def read_only(world: World) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    world.results.chmod(0o555)
    (world.results / "toy").chmod(0o555)


def newer_record(world: World) -> None:
    path = next((world.results / "toy" / "lora").glob("*.json"))
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": 99}))


def other_store(suite: str, method: str = "lora") -> Edit:
    return lambda world: store_with_records(world.tmp / "other", suite, method)


def two_suites(world: World) -> None:
    store_with_records(world.results, "second")
    store_with_records(world.tmp / "other", "toy")


COMPARE = ("compare", "{results}", "{tmp}/other")
REPORT = ("report", "--results-dir", "{results}", "--reports-dir", "{tmp}/reports", "--suite")
TRAIN = "{data}/toyds/train.jsonl"
GOLD = yml(tasks=task(truth_field="clean_label"))

CASES = [
    # data files (test_bad_data.py has the others)
    Case("empty train file", None, f"{TRAIN}: split 'train' is empty", edit=write("train.jsonl", b"")),
    Case("label negative", None, f"{TRAIN}:3: label -1 out of range [0, 2)",
         edit=line("train", '{"text": "x", "label": -1}')),
    Case("label NaN", None, f"{TRAIN}:3: label nan out of range", edit=line("train", '{"text": "x", "label": NaN}')),
    Case("test label out of range", None, "test.jsonl:3: label 2 out of range",
         edit=line("test", '{"text": "x", "label": 2}')),
    Case("text null", None, f"{TRAIN}:3: empty or non-string text", edit=line("train", '{"text": null, "label": 0}')),
    Case("a line that is a string", None, f"{TRAIN}:3: expected a JSON object (one row), got str",
         edit=line("train", '"good item"')),
    Case("a line that is a number", None, f"{TRAIN}:3: expected a JSON object (one row), got int",
         edit=line("train", "7")),
    Case("a BOM mid-file", None, f"{TRAIN}:3: not valid JSON", edit=line("train", '\ufeff{"text": "x", "label": 0}')),
    Case("labels.json an object", None, "labels.json: expected a list of at least two class names",
         edit=write("labels.json", '{"0": "a", "1": "b"}')),
    Case("labels.json empty", None, "labels.json: not valid JSON", edit=write("labels.json", b"")),
    Case("bad validation line", None, "validation.jsonl:1: not valid JSON", edit=write("validation.jsonl", "{oops\n")),
    Case("gold label missing", GOLD, f"{TRAIN}:3: no field 'clean_label'", edit=with_gold(None)),
    Case("gold label out of range", GOLD, f"{TRAIN}:3: label 7 out of range", edit=with_gold(7)),
    Case("unknown label_field", yml(tasks=task(label_field="y")), f"{TRAIN}:1: no field 'y'"),
    Case("unknown text_field", yml(tasks=task(text_field="body")), f"{TRAIN}:1: no field 'body'"),
    Case("unknown train_split", yml(tasks=task(train_split="train_2k")), "no split 'train_2k'"),
    Case("train split a folder", None, f"{TRAIN}: cannot read", edit=as_folder("train.jsonl")),
    Case("labels.json a folder", None, "labels.json: cannot read", edit=as_folder("labels.json")),
    Case("gz split not gzip", None, "train.jsonl.gz: cannot read", edit=gzipped(b'{"text": "x", "label": 0}\n')),
    Case("gz split truncated", None, "train.jsonl.gz: cannot read",
         edit=gzipped(gzip.compress(b'{"text": "x", "label": 0}\n' * 20)[:-12])),
    # data dirs and stores
    Case("data dir missing", None, "no data directory found (looked in: {tmp}/nodata)",
         argv=("run", "--suite", "{suite}", "--data-dir", "{tmp}/nodata", "--results-dir", "{results}")),
    Case("data dir a file", None, "no data directory found", edit=a_file("data.txt"),
         argv=("validate", "{suite}", "--data-dir", "{tmp}/data.txt")),
    Case("results dir a file", None, "cannot write results to {tmp}/results.txt/toy", edit=a_file("results.txt"),
         argv=(*RUN[:5], "--results-dir", "{tmp}/results.txt")),
    Case("results dir inside a file", None, "cannot write results to {tmp}/results.txt/sub/toy",
         edit=a_file("results.txt"), argv=(*RUN[:5], "--results-dir", "{tmp}/results.txt/sub")),
    Case("suite folder in the store a file", yml(name="other"), "cannot write results to {results}/other",
         edit=store_file),
    Case("results dir read-only", None, "cannot write results to {results}/toy", edit=read_only),
    Case("report of a store with a newer-schema record", None, "schema_version 99 is not readable",
         edit=newer_record, argv=(*REPORT, "toy")),
    # compare
    Case("compare missing baseline", None, "baseline {tmp}/nosuch: no such folder",
         argv=("compare", "{tmp}/nosuch", "{results}")),
    Case("compare missing new", None, "new {tmp}/other: no such folder", argv=COMPARE),
    Case("compare empty folder", None, "new {tmp}/other: no successful records",
         edit=lambda world: (world.tmp / "other").mkdir(), argv=COMPARE),
    Case("compare --fail without a common cell", None, "--fail: no cell is present on both sides",
         edit=other_store("toy", "dora"), argv=(*COMPARE, "--fail", "accuracy:-1pp")),
    Case("compare --suite neither holds", None, "no successful records for suite 'nosuch'",
         edit=other_store("toy"), argv=(*COMPARE, "--suite", "nosuch")),
    Case("compare a store of two suites", None, "holds several suites (second, toy); choose one with --suite",
         edit=two_suites, argv=COMPARE),
    Case("compare --fail malformed", None, "malformed --fail 'accuracy'", edit=other_store("toy"),
         argv=(*COMPARE, "--fail", "accuracy")),
    Case("compare --fail unknown metric", None, "unknown metric 'acc'", edit=other_store("toy"),
         argv=(*COMPARE, "--fail", "acc:-1pp")),
    Case("compare --fail pp on nll", None, "'pp' is for 0–1 metrics", edit=other_store("toy"),
         argv=(*COMPARE, "--fail", "nll:+1pp")),
    Case("compare --alpha 2", None, "--alpha must lie in (0, 1), got 2.0", edit=other_store("toy"),
         argv=(*COMPARE, "--alpha", "2")),
    Case("compare --alpha a word", None, "argument --alpha: invalid float value: 'abc'",
         argv=(*COMPARE, "--alpha", "abc")),
    Case("compare --resamples 0", None, "--resamples must be >= 1, got 0", edit=other_store("toy"),
         argv=(*COMPARE, "--resamples", "0")),
    Case("compare unknown correction", None, "invalid choice: 'bonferroni'",
         argv=(*COMPARE, "--correction", "bonferroni")),
    # report
    Case("report of an unknown suite", None, "no records for suite 'nosuch' in {results}", argv=(*REPORT, "nosuch")),
    Case("report of a suite name ../x", None, "suite name '../x' cannot name a folder", argv=(*REPORT, "../x")),
    Case("report of a malformed suite file", "tasks: [\n", "malformed YAML", argv=(*REPORT, "{suite}")),
    # generation tasks
    Case("evals on a classification task", yml(tasks=task(evals={"mmlu": {"task": "mmlu_local"}})),
         "evals: needs kind: generation"),
    Case("a probe on an encoder model", gen(model="minilm", evals={"crows": {"task": "crows_pairs_local"}}),
         "needs a causal LM; model 'minilm' is an encoder classifier"),
    Case("model folder without config.json", yml(model="{data}"), "model folder '{data}' has no config.json"),
    Case("model name empty", yml(model=""), "model '' is not a folder"),
    Case("causal model folder without config.json", gen(model="{data}"), "model folder '{data}' has no config.json"),
    Case("generation rows without the format's fields", gen(format="gsm8k", evals={}),
         "toyds/train:1: no field 'question'"),
    Case("generation response_field missing", gen(response_field="answer", evals={}),
         "toyds/train:1: no field 'answer'"),
    Case("HumanEval timeout inf", gen(evals={"he": {"task": "humaneval", "timeout_s": float("inf")}}),
         "timeout_s: expected a finite number, got inf"),
    Case("unknown causal preset", gen(model="random:tiny-lama"), "unknown random causal preset 'tiny-lama'"),
    Case("generation with noise", gen() + "noise: [{kind: symmetric, rate: 0.2}]\n", "it takes noise kind none"),
    Case("unknown generation format", gen(format="chatml"), "Invalid format 'chatml'"),
    Case("generation max_length 4", gen(max_length=4), "max_length must be >= 8"),
    Case("generation max_train 0", gen(max_train=0), "Invalid max_train: 0"),
    Case("evals a list", gen(evals=["mmlu_local"]), "evals: expected a mapping of name -> evaluation"),
    Case("unknown eval key", gen(evals={"mmlu": {"task": "mmlu_local", "shots": 5}}), "unknown key 'shots'"),
    Case("eval max_items 0", gen(evals={"mmlu": {"task": "mmlu_local", "max_items": 0}}), "Invalid max_items: 0"),
    Case("eval num_fewshot -1", gen(evals={"mmlu": {"task": "mmlu_local", "num_fewshot": -1}}),
         "Invalid num_fewshot: -1"),
    Case("duplicate eval names", gen(evals={"a": {"task": "mmlu_local", "name": "b"}, "b": "mmlu_local"}),
         "duplicate evaluation names"),
    Case("unknown lm-eval task", gen(evals={"x": {"task": "mmlu_locl"}}), "unknown lm-eval task 'mmlu_locl'"),
    Case("generation train split missing", gen(train_split="train_2k"), "no split 'train_2k'"),
    Case("greedy HumanEval with 5 samples", gen(evals={"he": {"task": "humaneval", "n_samples": 5}}),
         "greedy samples are identical"),
    Case("HumanEval k above n_samples", gen(evals={"he": {"task": "humaneval", "k": [1, 10]}}), "Invalid k [1, 10]"),
    Case("HumanEval without --allow-code-execution", gen(evals={"he": {"task": "humaneval"}}),
         "pass --allow-code-execution"),
    Case("method without generation support", gen(methods={"co-teaching": {}}),
         "method 'co-teaching' does not train causal LMs yet"),
    Case("generation-only method on a classifier", yml(methods={"lora-par": {}}),
         "method 'lora-par' does not train classifiers"),
    Case("generation kind on a bad spec key", yml(tasks={"sft": {**GEN_TASK, "label_field": "y"}}),
         "unknown key 'label_field'", argv=VALIDATE),
]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_data_stores_and_commands_are_one_error_line(case: Case, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    world = make_world(tmp_path, monkeypatch)
    try:
        check(case, world, capfd)
    finally:
        for folder in (world.results, world.results / "toy"):
            folder.chmod(0o755)
