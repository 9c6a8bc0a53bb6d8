"""Bad suites, overrides, names and flags: one ``error:`` line, exit 2, the store untouched, nothing trained.

The README promises it for bad input ("Using it"). Each row is one distinct bad input to the CLI,
run in process against a store of two records (tests/bad_input_helpers.py); bad data files, stores,
``compare``, ``report`` and generation tasks are in test_bad_inputs_data.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_input_helpers import DROP, VALIDATE, Case, check, make_world, params, task, train, yml

LONG = "x" * 300

SUITES = [
    # unknown names
    Case("unknown suite name", None, "unknown suite 'noisy-text-smok' (did you mean 'noisy-text-smoke'?)",
         argv=("run", "--suite", "noisy-text-smok", "--results-dir", "{results}")),
    Case("missing suite file", None, "unknown suite '{tmp}/nosuch.yaml'",
         argv=("validate", "--suite", "{tmp}/nosuch.yaml")),
    Case("unknown method", yml(methods={"lroa": {}}), "unknown method 'lroa' (did you mean 'lora'?)"),
    Case("unknown method behind an id", yml(methods={"mine": {"method": "nosuch"}}), "unknown method 'nosuch'"),
    Case("unknown dataset", yml(tasks=task(dataset="toyd")), "dataset 'toyd' not found"),
    Case("missing dataset path", yml(tasks=task(dataset="/nonexistent/toyds")),
         "dataset folder /nonexistent/toyds does not exist"),
    Case("unknown train_dataset", yml(tasks=task(train_dataset="nosuch")), "dataset 'nosuch' not found"),
    Case("unknown task kind", yml(tasks=task(kind="regression")), "unknown task kind 'regression'"),
    Case("unknown noise kind", yml(noise=[{"kind": "sym", "rate": 0.2}]), "noise kind"),
    Case("unknown pair map", yml(noise=[{"kind": "asymmetric", "rate": 0.2, "pair_map": "nosuch"}]), "pair map"),
    Case("unknown instance generator", yml(noise=[{"kind": "instance", "rate": 0.2, "generator": "nosuch"}]),
         "instance-noise generator"),
    Case("unknown report metric", yml(report={"delta_metrics": ["acuracy"]}), "unknown metric 'acuracy'"),
    Case("report delta names a method not in the grid", yml(report={"deltas": {"lora": ["pissa"]}}),
         "'pissa' is not a method of this suite"),
    Case("unknown lora variant", yml(methods={"lora": {"config": {"variant": "nosuch"}}}), "Invalid variant"),
    # malformed files
    Case("unclosed flow mapping", "name: toy\ntasks: {toy: {dataset: toyds}\n", "malformed YAML"),
    Case("bad indentation", "name: toy\ntasks:\n  toy:\n    dataset: toyds\n   max_train: 3\n", "malformed YAML"),
    Case("non-UTF-8 suite file", (yml() + "description: caf\xe9\n").encode("latin-1"), "not UTF-8 text (byte 0xe9"),
    Case("duplicate top-level key", yml() + "methods: {lora: {}}\n", "duplicate key 'methods'"),
    Case("duplicate nested key", "name: toy\ntasks:\n  toy: {dataset: toyds, dataset: trec}\nmethods: {lora: {}}\n",
         "duplicate key 'dataset'"),
    Case("top level a list", "- name: toy\n", "a suite must be a mapping at the top level"),
    Case("empty suite file", "", "'tasks' must be a non-empty mapping"),
    Case("python tag", yml() + "description: !!python/object/apply:os.getcwd []\n", "malformed YAML"),
    Case("!function tag", yml(methods=DROP) + "methods: !function my.methods\n", "malformed YAML"),
    Case("include of a missing file", "include: nosuch.yaml\n" + yml(), "cannot read suite"),
    Case("include cycle", "include: toy.yaml\n" + yml(), "include cycle"),
    # unknown keys at every level
    Case("unknown top-level key", yml(taks={}), "unknown key 'taks' (did you mean 'tasks'?)"),
    Case("unknown task key", yml(tasks=task(datset="toyds")), "unknown key 'datset'"),
    Case("unknown train key", yml(train=train(epoch=2)), "unknown key 'epoch' (did you mean 'epochs'?)"),
    Case("unknown grid-entry key", yml(methods={"lora": {"confg": {}}}), "unknown key 'confg'"),
    Case("unknown method-config key", yml(methods={"lora": {"config": {"rank": 4}}}), "unknown key 'rank'"),
    Case("unknown noise key", yml(noise=[{"kind": "symmetric", "ratee": 0.2}]), "unknown key 'ratee'"),
    Case("unknown imbalance key", yml(tasks=task(imbalance={"ratio": 2, "minority": 0, "seed": 1})),
         "unknown key 'seed'"),
    Case("unknown report key", yml(report={"delta": {}}), "unknown key 'delta'"),
    Case("unknown model key", yml(model={"name": "minilm", "revision": "main"}), "unknown key 'revision'"),
    # wrong types
    Case("tasks a list", yml(tasks=["toy"]), "'tasks' must be a non-empty mapping"),
    Case("a task a string", yml(tasks={"toy": "toyds"}), "tasks.toy: expected a mapping"),
    Case("methods a list", yml(methods=["lora"]), "'methods' must be a non-empty mapping"),
    Case("a grid entry a list", yml(methods={"lora": [1]}), "methods.lora: expected a mapping"),
    Case("method config a list", yml(methods={"lora": {"config": ["r", 4]}}), "config: expected a mapping"),
    Case("method config wrong type", yml(methods={"lora": {"config": {"r": "eight"}}}), "config.r: expected int"),
    Case("model a number", yml(model=5), "model.name: expected str, got 5"),
    Case("epochs a word", yml(train=train(epochs="three")), "train.epochs: expected int"),
    Case("lr a word", yml(train=train(lr="fast")), "train.lr: expected float"),
    Case("group_by_length a word", yml(train=train(group_by_length="maybe")), "expected bool"),
    Case("max_train a float", yml(tasks=task(max_train=1.5)), "max_train: expected int | None"),
    Case("noise a mapping", yml(noise={"kind": "none"}), "noise: expected a list"),
    Case("noise entry a string", yml(noise=["symmetric"]), "noise[0]: expected a mapping"),
    Case("imbalance a number", yml(tasks=task(imbalance=9)), "imbalance: expected"),
    Case("seeds a string", yml(seeds="0"), "seeds: expected a list"),
    Case("seeds hold a string", yml(seeds=[0, "1"]), "seeds must be a non-empty list of integers"),
    Case("seeds hold a bool", yml(seeds=[True]), "seeds must be a non-empty list of integers"),
    Case("seeds empty", yml(seeds=[]), "seeds must be a non-empty list of integers"),
    Case("seeds repeat", yml(seeds=[0, 1, 0]), "repeat a seed"),
    Case("seed negative", yml(seeds=[-1]), "seeds must be"),
    Case("seed too large", yml(seeds=[2**40]), "seeds must be"),
    # out-of-range numbers
    Case("max_train -5", yml(tasks=task(max_train=-5)), "max_train must be >= 1"),
    Case("max_train 0", yml(tasks=task(max_train=0)), "max_train must be >= 1"),
    Case("max_test 0", yml(tasks=task(max_test=0)), "max_test must be >= 1"),
    Case("val_fraction 2.0", yml(tasks=task(val_fraction=2.0)), "val_fraction must be between 0 and 1"),
    Case("max_length 0", yml(tasks=task(max_length=0)), "max_length must be >= 1"),
    Case("lr nan", yml(train=train(lr=float("nan"))), "Invalid lr nan"),
    Case("lr inf", yml(train=train(lr=float("inf"))), "Invalid lr inf"),
    Case("lr 1e9", yml(train=train(lr="1e9")), "Invalid lr 1000000000.0"),
    Case("head_lr negative", yml(train=train(head_lr=-1)), "Invalid head_lr"),
    Case("epochs -1", yml(train=train(epochs=-1)), "epochs must be >= 0"),
    Case("batch size 0", yml(train=train(batch_size=0)), "batch sizes >= 1"),
    Case("eval batch size 0", yml(train=train(eval_batch_size=0)), "batch sizes >= 1"),
    Case("warmup_ratio 1", yml(train=train(warmup_ratio=1.0)), "warmup_ratio 1.0"),
    Case("unknown precision", yml(train=train(precision="fp16")), "Invalid precision 'fp16'"),
    Case("grid entry lr nan", yml(methods={"lora": {"train": {"lr": float("nan")}}}), "methods.lora.train"),
    Case("lora rank 0", yml(methods={"lora": {"config": {"r": 0}}}), "Invalid rank: 0"),
    Case("small-loss rank -1", yml(methods={"small-loss": {"config": {"r": -1}}}), "Invalid rank: -1"),
    Case("co-teaching dropout 1.5", yml(methods={"co-teaching": {"config": {"dropout": 1.5}}}), "Invalid dropout: 1.5"),
    Case("cleanlab rank 0", yml(methods={"cleanlab": {"config": {"r": 0}}}), "Invalid rank: 0"),
    Case("method config nan", yml(methods={"small-loss": {"config": {"threshold": float("nan")}}}),
         "config.threshold: expected a finite number, got nan"),
    Case("head_lr 5", yml(train=train(head_lr=5)), "Invalid head_lr 5.0: at most 1.0"),
    Case("noise rate above 1", yml(noise=[{"kind": "symmetric", "rate": 1.5}]), "noise rate"),
    Case("noise rate negative", yml(noise=[{"kind": "symmetric", "rate": -0.2}]), "noise rate"),
    Case("noise none with a rate", yml(noise=[{"kind": "none", "rate": 0.2}]), "takes rate 0"),
    Case("fit_fraction 0", yml(noise=[{"kind": "instance", "rate": 0.2, "fit_fraction": 0}]), "fit_fraction"),
    Case("truth_field with synthetic noise", yml(tasks=task(truth_field="label"),
                                                 noise=[{"kind": "symmetric", "rate": 0.2}]), "real noise"),
    Case("imbalance ratio below 1", yml(tasks=task(imbalance={"ratio": 0.5, "minority": 0})), "ratio must be"),
    Case("imbalance ratio nan", yml(tasks=task(imbalance={"ratio": float("nan"), "minority": 0})), "ratio must be"),
    Case("imbalance minority negative", yml(tasks=task(imbalance={"ratio": 2, "minority": -1})), "minority must be"),
    Case("imbalance minority no class index", yml(tasks=task(imbalance={"ratio": 2, "minority": 5})),
         "imbalance minority 5 is not a class index"),
    Case("imbalance minority no class name", yml(tasks=task(imbalance={"ratio": 2, "minority": "neutral"})),
         "imbalance minority 'neutral' is not a class name"),
    Case("imbalance ratio keeps nothing", yml(tasks=task(imbalance={"ratio": 1000, "minority": 1})), "imbalance"),
    Case("pair map target out of range", yml(noise=[{"kind": "asymmetric", "rate": 0.2, "pair_map": {0: 5}}]),
         "pair_map[0] target 5 is out of range"),
    Case("pair map of another class count", yml(noise=[{"kind": "asymmetric", "rate": 0.2, "pair_map": "sst5"}]),
         "pair map 'sst5' needs 5 classes"),
    # --set syntax
    Case("--set without =", None, "--set expects key=value", extra=("--set", "train.epochs")),
    Case("--set without a key", None, "--set expects key=value", extra=("--set", "=5")),
    Case("--set empty", None, "--set expects key=value", extra=("--set", "")),
    Case("--set under a number", None, "'train.epochs' is not a mapping", extra=("--set", "train.epochs.x=1")),
    Case("--set unknown key", None, "unknown key 'nosuch'", extra=("--set", "train.nosuch=1")),
    Case("--set unparsable value", None, "seeds: expected a list", extra=("--set", "seeds=[0,")),
    Case("--set lr a word", None, "train.lr: expected float", extra=("--set", "train.lr=abc")),
    Case("--set on validate", None, "max_train must be >= 1", argv=VALIDATE, extra=("--set", "tasks.toy.max_train=-5")),
    # names that would leave their folder
    Case("suite name ../x", yml(name="../x"), "suite name '../x' cannot name a folder"),
    Case("suite name empty", yml(name=""), "suite name '' cannot name a folder"),
    Case("suite name .", yml(name="."), "suite name '.' cannot name a folder"),
    Case("suite name ..", yml(name=".."), "suite name '..' cannot name a folder"),
    Case("suite name 300 chars", yml(name=LONG), "suite name 'xxxx"),
    Case("suite name with a slash", yml(name="a/b"), "suite name 'a/b' cannot name a folder"),
    Case("suite name with a space", yml(name="my suite"), "suite name 'my suite' cannot name a folder"),
    Case("suite name by --set", None, "suite name '../../etc' cannot", extra=("--set", "name=../../etc")),
    Case("method id ../x", yml(methods={"../x": {"method": "lora"}}), "method id '../x' cannot name a folder"),
    Case("method id empty", yml(methods={"": {"method": "lora"}}), "method id '' cannot name a folder"),
    Case("method id .", yml(methods={".": {"method": "lora"}}), "method id '.' cannot name a folder"),
    Case("method id ..", yml(methods={"..": {"method": "lora"}}), "method id '..' cannot name a folder"),
    Case("method id 300 chars", yml(methods={LONG: {"method": "lora"}}), "method id 'xxxx"),
    Case("method id with a slash", yml(methods={"a/b": {"method": "lora"}}), "method id 'a/b' cannot name a folder"),
    # flags
    Case("unknown flag", None, "unrecognized arguments: --workers 4", extra=("--workers", "4")),
    # an invalid choice where --executor is a flag, an unrecognized argument where it is not yet
    Case("unknown executor", None, "--executor", extra=("--executor", "slurm")),
    Case("--jobs 0", None, "--jobs: expected a whole number of at least 1", extra=("--jobs", "0")),
    Case("--jobs a word", None, "--jobs: expected a whole number of at least 1", extra=("--jobs", "two")),
    Case("run without --suite", None, "the following arguments are required: --suite", argv=("run",)),
    Case("no command", None, "the following arguments are required", argv=()),
    Case("unknown command", None, "invalid choice: 'frobnicate'", argv=("frobnicate",)),
    Case("ls of an unknown kind", None, "invalid choice: 'bogus'", argv=("ls", "bogus")),
    Case("validate two suites", None, "two suites given", argv=("validate", "noisy-text-smoke", "--suite", "{suite}")),
]


@pytest.mark.parametrize("case", params(SUITES))
def test_a_bad_suite_is_one_error_line(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capfd: pytest.CaptureFixture[str]) -> None:
    check(case, make_world(tmp_path, monkeypatch), capfd)


def test_the_table_is_distinct() -> None:
    from tests.unit.test_bad_inputs_data import CASES

    every = [*SUITES, *CASES]
    assert len({c.id for c in every}) == len(every) >= 60  # the reliability issue asks for 60 distinct inputs
    assert len({(c.suite, c.argv, c.extra) for c in SUITES}) == len(SUITES)  # no row repeats another's input
