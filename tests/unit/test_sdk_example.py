"""The worked example of docs/methods.md, run as it stands there, through the harness's own checks."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from bench.sdk.registry import get_method
from tests.helpers import make_ctx

DOC = Path(__file__).resolve().parents[2] / "docs" / "methods.md"


def example_source() -> str:
    text = DOC.read_text(encoding="utf-8").split("## A worked example", 1)[1]
    match = re.search(r"```python\n(.*?)```", text, flags=re.S)
    assert match, "docs/methods.md lost its worked example"
    return match.group(1)


@pytest.fixture(scope="module")
def entry():
    module = types.ModuleType("docs_methods_example")  # dataclasses look their module up
    sys.modules[module.__name__] = module
    exec(compile(example_source(), str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own doc
    return get_method("smooth-lora")


def test_example_registers_with_its_config(entry) -> None:
    assert entry.name == "smooth-lora" and entry.version == "1" and entry.kinds == ("classification",)
    assert entry.config().smoothing == 0.1
    with pytest.raises(ValueError, match="Invalid smoothing"):
        entry.config(smoothing=1.5)


def test_example_without_smoothing_is_the_lora_method(entry) -> None:
    # smoothing 0 is plain cross-entropy: the example must then train exactly as the built-in lora
    ctx = make_ctx(epochs=2)
    example = entry.adapter(entry.config(r=4, alpha=8, smoothing=0.0)).fit(ctx).predict_proba(ctx.val)
    lora = get_method("lora")
    reference = lora.adapter(lora.config(r=4, alpha=8)).fit(ctx).predict_proba(ctx.val)
    np.testing.assert_array_equal(example, reference)
    smoothed = entry.adapter(entry.config(r=4, alpha=8, smoothing=0.5)).fit(ctx).predict_proba(ctx.val)
    assert np.abs(smoothed - reference).max() > 1e-3  # the hook is really used


def test_example_trains_saves_and_reloads(entry, tmp_path: Path) -> None:
    ctx = make_ctx(epochs=2)
    method = entry.adapter(entry.config(r=4, alpha=8))
    fitted = method.fit(ctx)
    probs = fitted.predict_proba(ctx.val)
    assert probs.shape == (len(ctx.val), 3)
    assert 0 < fitted.trainable_parameters() < fitted.total_parameters()
    fitted.save(tmp_path)
    again = method.load(ctx, tmp_path)
    np.testing.assert_allclose(again.predict_proba(ctx.val), probs, atol=1e-6)
