"""CrowS-Pairs parity: the harness's in-process scoring vs lm-eval's own CLI, item by item.

Both sides score the embedded SmolLM2-135M-Instruct (bf16) on the same 20 seeded pairs of the
local task (``suites/lm_eval/crows_pairs_local.yaml``, lm-eval's crows_pairs functions): the
harness through ``HFLM`` over the in-memory model, the CLI (``lm_eval run --model hf``) in a
subprocess that loads the converted model folder itself. Measured on 200 pairs with
``python -m benchmarks.lm_eval_parity --task crows_pairs_local --max-items 200``: 0 of 200
per-item loglikelihoods differ (docs/bias.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.spec.generation import EvalSpec
from benchmarks.lm_eval_parity import _per_item, direct, harness

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_crows_pairs_scores_equal_lm_evals_cli_item_by_item() -> None:
    from bench.models.causal import embedded_folder

    spec = EvalSpec(task="crows_pairs_local", name="crows_pairs_local", max_items=20)
    ours, our_samples, _ = harness("smollm2", spec, SHARED)
    theirs, their_samples, _ = direct(embedded_folder("smollm2"), spec, SHARED)
    a, b = _per_item(our_samples), _per_item(their_samples)
    assert len(a) == len(b) == 20
    assert a == b  # both options' loglikelihoods of every pair, exactly
    for name in ("pct_stereotype", "likelihood_diff", "pct_stereotype_gender"):
        assert ours[name] == pytest.approx(theirs[name], abs=1e-12), name
