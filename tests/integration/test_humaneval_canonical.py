"""All 164 HumanEval canonical solutions pass in the sandbox, so its limits and read-only
filesystem do not fail correct programs (about 12 s with 2 workers on a 2-core CPU)."""

from __future__ import annotations

import pytest

from bench.evaluate import sandbox
from bench.evaluate.humaneval import load_problems, score

pytestmark = pytest.mark.integration


def test_every_canonical_solution_passes() -> None:
    if sandbox.isolation_problem() is not None:
        pytest.skip(f"no isolation on this kernel: {sandbox.isolation_problem()}")
    problems = load_problems()
    result = score(problems, {t: [p.canonical_solution] for t, p in problems.items()}, ks=(1,),
                   allow_code_execution=True)
    failed = {t: rs[0].stderr[-200:] for t, rs in result.results.items() if not rs[0].passed}
    assert failed == {}
    assert result.pass_at_k == {"pass_at_1": 1.0}
