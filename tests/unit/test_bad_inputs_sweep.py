"""A bad ``sweep:`` (bench.spec.sweep) is one ``error:`` line and exit 2 before any cell runs, the store untouched.

The cases use the bad-input harness of test_bad_inputs.py (tests/bad_input_helpers.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.bad_input_helpers import VALIDATE, Case, check, gen, make_world, params, yml


def swept(sweep: Any, **entry: Any) -> str:
    """The base suite with ``lora`` sweeping ``sweep``."""
    return yml(methods={"lora": {**entry, "sweep": sweep}})


CASES = [
    Case("sweep over an unknown train key", swept({"train.lrr": [1e-3]}),
         "methods.lora.sweep: unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    Case("sweep over the seed", swept({"seed": [0, 1]}),
         "methods.lora.sweep: cannot sweep 'seed': sweep keys are train.<field> or config.<field>"),
    Case("sweep over the model", swept({"model": {"name": ["minilm"]}}), "cannot sweep 'model.name'"),
    Case("sweep with an empty list", swept({"train.lr": []}),
         "methods.lora.sweep.train.lr: expected a non-empty list of values, got []"),
    Case("sweep with a number, not a list", swept({"train.lr": 1e-3}),
         "methods.lora.sweep.train.lr: expected a non-empty list of values, got 0.001"),
    Case("sweep value of the wrong type", swept({"train.lr": [1e-3, "fast"]}),
         "methods.lora.sweep: train.lr: expected float, got 'fast'"),
    Case("sweep value out of range", swept({"train": {"lr": [1e-3, 5]}}), "methods.lora.sweep: train: Invalid lr 5.0"),
    Case("sweep value listed twice", swept({"train.lr": [1e-3, "1e-3"]}),
         "methods.lora.sweep.train.lr: '1e-3' is listed twice"),
    Case("sweep on a key the entry fixes", swept({"train.lr": [1e-3]}, train={"lr": 1e-3}),
         "methods.lora.sweep: train.lr is both fixed (in train:) and swept (in sweep:)"),
    Case("--set on a swept key", swept({"train.lr": [1e-3, 1e-2]}),
         "--set train.lr: methods.lora sweeps train.lr; set the sweep's values instead "
         "(--set methods.lora.sweep.train.lr=[...])", extra=("--set", "train.lr=1e-3")),
    Case("sweep of a method config of the wrong type", swept({"config.r": [4, "four"]}),
         "methods.lora.sweep: config.r: expected int, got 'four'"),
    Case("sweep over an unknown method config key", swept({"config.rank": [4]}),
         "methods.lora.sweep: config: unknown key 'rank'"),
    Case("sweep of a method config out of range", swept({"config.r": [4, 0]}), "Invalid rank: 0",
         argv=VALIDATE),
    Case("sweep a list", swept([1e-3]), "methods.lora.sweep: expected dict | None, got [0.001]"),
    Case("suite-wide sweep with an empty list", yml(sweep={"train.lr": []}),
         "sweep.train.lr: expected a non-empty list of values"),
    Case("sweep in a suite with a generation task", gen(methods={"lora": {"sweep": {"train.lr": [1e-3]}}}),
         "sweep: (lora) selects on validation accuracy, which generation tasks (sft) do not measure"),
]


@pytest.mark.parametrize("case", params(CASES))
def test_a_bad_sweep_is_one_error_line(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capfd: pytest.CaptureFixture[str]) -> None:
    check(case, make_world(tmp_path, monkeypatch), capfd)
