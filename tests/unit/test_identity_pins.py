"""Run ids of real suites, pinned: a change that moves them orphans every stored run of those cells.

Measured with ``bench.run.runner.resolve_suite`` on ../shared/data (and equal to the ids of the
code before the architecture refactor). If a change really alters a cell's resolved spec (a
method's version, a default, a data file, an lm-eval template's bytes), update the pin and say so.
"""

from __future__ import annotations

import pytest

from bench.data.loaders import resolve_data_dir
from bench.errors import BenchError
from bench.run.runner import resolve_suite
from bench.spec.suite import load_suite

PINS = {
    "reasoning-smoke": ["1cfaa6393c61"],
    "code-smoke": ["fb114f9a59db"],
    "reasoning": ["a7999b854454", "d76b38a989a3", "aebc3ce156dd"],
    # delora-nld at version 3 (its detector trains BERT's pooler, 2026-12-07): 08c1aaa76ef3 -> d0892285e117
    "noisy-real": ["579e626e129c", "d0892285e117", "db7018306ee9"],
}


@pytest.mark.parametrize("suite", sorted(PINS))
def test_run_ids_are_stable(suite: str) -> None:
    try:
        data = resolve_data_dir(None)
    except BenchError:
        pytest.skip("no data directory")
    ids = [cell.run_id for cell in resolve_suite(load_suite(suite), data)]
    assert ids[: len(PINS[suite])] == PINS[suite]
