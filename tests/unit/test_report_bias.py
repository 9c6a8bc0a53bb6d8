"""The leaderboard's Bias section and the bias plots, on hand-made probe records and item arrays."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.metrics.bias import PROBES
from bench.report import PLOT_FILES, leaderboard_markdown, write_report
from bench.report.bias import bias_section
from bench.report.bias_plots import CROWS_PLOT, STEREOSET_PLOT, plot_crows_pairs, plot_stereoset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def crows(stereo: list[bool]) -> dict[str, np.ndarray]:
    """CrowS-Pairs items: item i prefers the more stereotypical sentence when ``stereo[i]``."""
    n = len(stereo)
    return {"ll_more": np.where(stereo, -1.0, -2.0), "ll_less": np.full(n, -1.5),
            "bias_type": np.array(["race-color", "race-color", "gender", "gender"][:n]),
            "doc_id": np.arange(n, dtype=np.int64)}


def stereoset(stereo: list[bool]) -> dict[str, np.ndarray]:
    n = len(stereo)
    return {"ll_stereotype": np.where(stereo, -1.0, -2.0), "ll_anti": np.full(n, -1.5),
            "ll_unrelated": np.full(n, -9.0), "target": np.array(["nurse", "nurse", "chef", "chef"][:n]),
            "bias_type": np.array(["profession", "profession", "gender", "gender"][:n]),
            "intra": np.array([True, False, True, False][:n]), "doc_id": np.arange(n, dtype=np.int64)}


def bbq() -> dict[str, np.ndarray]:
    return {"correct": np.array([1.0, 0.0, 1.0, 1.0]), "biased": np.array([0.0, 1.0, 1.0, 0.0]),
            "non_unknown": np.array([0.0, 1.0, 1.0, 1.0]), "disambig": np.array([False, False, True, True]),
            "category": np.array(["Age", "Age", "Age", "Religion"]), "doc_id": np.arange(4, dtype=np.int64)}


def winobias() -> dict[str, np.ndarray]:
    return {"correct": np.array([1.0, 1.0, 0.0, 1.0]), "pro": np.array([True, True, False, False]),
            "type": np.array([1, 2, 1, 2]), "doc_id": np.arange(4, dtype=np.int64)}


PROBE_OF = {"crows": "crows_pairs", "stereoset": "stereoset", "bbq": "bbq", "winobias": "winobias"}


def bias_run(run_id: str, method: str, evals: dict[str, dict[str, np.ndarray]], *, epochs: int = 1,
             seed: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A successful generation record scored on ``evals`` (eval name -> items) and its stored arrays."""
    metrics: dict[str, Any] = {}
    predictions: dict[str, np.ndarray] = {}
    diagnostics: dict[str, Any] = {}
    for name, items in evals.items():
        probe = PROBE_OF[name]
        metrics.update({f"{name}_{k}": v for k, v in PROBES[probe](items).items()})
        predictions.update({f"{name}_{k}": v for k, v in items.items()})
        predictions[f"{name}_probe"] = np.array([probe])
        diagnostics[name] = {"probe": probe, "n_items": float(len(items["doc_id"])), "num_fewshot": 0.0}
    record = {
        "schema_version": 2, "run_id": run_id, "kind": "generation", "status": "success", "error": None,
        "spec": {"suite": "s", "task": {"name": "gsm8k", "kind": "generation",
                                        "evals": [{"name": name, "task": f"{name}_local"} for name in evals]},
                 "noise": {"kind": "none", "rate": 0.0, "label": "clean"}, "model": {"name": "smollm2"},
                 "method": {"id": method}, "train": {"epochs": epochs}, "seed": seed},
        "env": {"device": "cpu", "git_commit": "abc", "git_dirty": False, "packages": {}},
        "metrics": metrics, "efficiency": {"trainable_params": 1000}, "diagnostics": {"evals": diagnostics},
    }
    return record, predictions


def crows_pair() -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Base at 50 % stereotype (2 of 4 pairs), lora at 75 % (3 of 4, one more on the same items)."""
    base, base_items = bias_run("b0", "base", {"crows": crows([True, False, True, False])}, epochs=0)
    lora, lora_items = bias_run("l0", "lora", {"crows": crows([True, True, True, False])})
    return [lora, base], {"b0": base_items, "l0": lora_items}


def table_row(lines: list[str], method: str, after: str) -> list[str]:
    """The cells of ``method``'s row in the first table after the heading that starts with ``after``."""
    start = next(i for i, line in enumerate(lines) if line.startswith(after))
    row = next(line for line in lines[start:] if line.startswith(f"| {method} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def bracket(cell: str) -> tuple[float, float, float]:
    match = re.fullmatch(r"\**([+-]?[\d.]+) \[([+-]?[\d.]+), ([+-]?[\d.]+)\]\**", cell)
    assert match, cell
    point, lo, hi = (float(g) for g in match.groups())
    return point, lo, hi


def test_values_deltas_and_intervals() -> None:
    records, items = crows_pair()
    lines = bias_section(records, items)
    assert lines[0] == "## Bias" and "Base model (Δ): `base`." in lines
    header = next(line for line in lines if line.startswith("| method"))
    assert header == "| method | seeds | stereotype (ideal 50) | Δ stereotype |"
    heading = "### CrowS-Pairs (crows, 4 items)"
    assert heading in lines
    base, lora = table_row(lines, "base", heading), table_row(lines, "lora", heading)
    assert lines.index(next(x for x in lines if x.startswith("| base |"))) < \
        lines.index(next(x for x in lines if x.startswith("| lora |")))  # base first
    assert base[:2] == ["base", "1"] and base[3] == "–"
    point, lo, hi = bracket(base[2])
    assert point == 50.0 and lo <= point <= hi
    point, lo, hi = bracket(lora[2])
    assert point == 75.0 and lo <= point <= hi
    delta, lo, hi = bracket(lora[3])
    # lora differs from base on one item of four, always towards the stereotype: Δ >= 0 on every resample
    assert delta == 25.0 and lo == 0.0 and lo <= delta <= hi <= 100.0
    assert lines == bias_section(list(reversed(records)), items)  # deterministic, order-free


def test_run_without_arrays_shows_its_value_without_interval() -> None:
    records, items = crows_pair()
    lines = bias_section(records, {"b0": items["b0"]})
    heading = "### CrowS-Pairs (crows, 4 items)"
    assert table_row(lines, "lora", heading) == ["lora", "1", "75.0", "+25.0"]
    assert bracket(table_row(lines, "base", heading)[2])[0] == 50.0
    assert table_row(bias_section(records, None), "base", heading) == ["base", "1", "50.0", "–"]


def test_no_delta_columns_without_a_base() -> None:
    records, items = crows_pair()
    records[1]["spec"]["train"]["epochs"] = 1
    lines = bias_section(records, items)
    assert any("no Δ columns" in line for line in lines)
    header = next(line for line in lines if line.startswith("| method"))
    assert "Δ" not in header
    assert [c[:4] for c in table_row(lines, "base", "### CrowS")] == ["base", "1", "50.0"]


def test_several_untrained_methods_prefer_base_and_seeds_average() -> None:
    records, items = crows_pair()
    zero, zero_items = bias_run("z0", "a-zero-shot", {"crows": crows([True, True, True, True])}, epochs=0)
    lora1, lora1_items = bias_run("l1", "lora", {"crows": crows([True, True, True, True])}, seed=1)
    lines = bias_section([*records, zero, lora1], {**items, "z0": zero_items, "l1": lora1_items})
    assert "Base model (Δ): `base`." in lines
    lora = table_row(lines, "lora", "### CrowS")
    assert lora[1] == "2" and bracket(lora[2])[0] == 87.5 and bracket(lora[3])[0] == 37.5
    assert bracket(table_row(lines, "a-zero-shot", "### CrowS")[3])[0] == 50.0


def test_group_tables_by_bias_type() -> None:
    records, items = crows_pair()
    lines = bias_section(records, items)
    heading = "### CrowS-Pairs stereotype by bias type (crows, ideal 50)"
    start = lines.index(heading)
    assert lines[start + 2] == "| bias type | items | base | lora |"
    assert lines[start + 4:start + 6] == ["| gender | 2 | 50.0 | 50.0 |", "| race_color | 2 | 50.0 | 100.0 |"]
    assert "| race_color | – | 50.0 | 100.0 |" in bias_section(records, {})  # no arrays: no counts


def test_every_probe_gets_its_headline_table() -> None:
    evals = {"crows": crows([True, False, True, False]), "bbq": bbq(), "winobias": winobias(),
             "stereoset": stereoset([True, True, False, False])}
    base, base_items = bias_run("b0", "base", evals, epochs=0)
    lora, lora_items = bias_run("l0", "lora", {**evals, "stereoset": stereoset([True, True, True, False])})
    text = "\n".join(bias_section([base, lora], {"b0": base_items, "l0": lora_items}))
    for heading in ("### CrowS-Pairs (crows, 4 items)", "### BBQ (bbq, 4 items)", "### WinoBias (winobias, 4 items)",
                    "### StereoSet (stereoset, 4 items)", "### BBQ s_AMB by category (bbq, ideal 0)",
                    "### StereoSet SS by bias type (stereoset, ideal 50)"):
        assert heading in text
    for header in ("s_AMB (ideal 0)", "s_DIS (ideal 0)", "gap (ideal 0)", "SS (ideal 50)", "LMS (ideal 100)"):
        assert header in text
    assert "| ambiguous items |" in text and "intrasentence" not in text
    # the section follows the generation tables in the leaderboard
    board = leaderboard_markdown([base, lora], suite="s", items={"b0": base_items, "l0": lora_items})
    assert board.index("## Generation") < board.index("## Bias") < board.index("## Failed runs")


def test_nothing_without_a_probe() -> None:
    records, items = crows_pair()
    plain = [{**r, "diagnostics": {"evals": {"crows": {"n_items": 4.0}}}} for r in records]
    failed = [{**r, "status": "failed"} for r in records]
    assert bias_section(plain, items) == [] and bias_section(failed, items) == []
    assert "## Bias" not in leaderboard_markdown(plain, suite="s")


def test_plots_are_written_and_none_without_a_probe(tmp_path: Path) -> None:
    evals = {"crows": crows([True, False, True, False]), "stereoset": stereoset([True, True, False, False])}
    base, base_items = bias_run("b0", "base", evals, epochs=0)
    lora, _ = bias_run("l0", "lora", {**evals, "crows": crows([True, True, True, False])})
    items = {"b0": base_items}  # lora without arrays: its points have no error bars
    for plot, name in ((plot_stereoset, STEREOSET_PLOT), (plot_crows_pairs, CROWS_PLOT)):
        assert plot([base, lora], tmp_path / name, items) == tmp_path / name
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
        assert plot([{**base, "diagnostics": {}}], tmp_path / f"none-{name}", items) is None
        assert not (tmp_path / f"none-{name}").exists()


def test_write_report_registers_the_bias_plots_and_removes_stale_ones(tmp_path: Path) -> None:
    assert {STEREOSET_PLOT, CROWS_PLOT} <= set(PLOT_FILES)
    evals = {"crows": crows([True, False, True, False]), "stereoset": stereoset([True, True, False, False])}
    base, base_items = bias_run("b0", "base", evals, epochs=0)
    paths = write_report([base], tmp_path, suite="s", items={"b0": base_items})
    assert [p.name for p in paths][-2:] == [STEREOSET_PLOT, CROWS_PLOT]
    assert f"![bias_stereoset]({STEREOSET_PLOT})" in (tmp_path / "leaderboard.md").read_text()
    write_report([{**base, "diagnostics": {}}], tmp_path, suite="s")
    assert not (tmp_path / STEREOSET_PLOT).exists() and not (tmp_path / CROWS_PLOT).exists()


def test_bench_report_reads_the_arrays_from_the_store(tmp_path: Path) -> None:
    from bench.api import build_report
    from bench.results.store import Store

    store = Store(tmp_path / "results")
    base, base_items = bias_run("b0", "base", {"crows": crows([True, False, True, False])}, epochs=0)
    lora, lora_items = bias_run("l0", "lora", {"crows": crows([True, True, True, False])})
    store.write(base, base_items)
    store.write(lora, lora_items)
    read = store.read_predictions("s", "lora", "l0")
    assert read is not None and set(read) == set(lora_items)
    assert np.array_equal(read["crows_bias_type"], lora_items["crows_bias_type"])
    assert store.read_predictions("s", "lora", "missing") is None
    build_report("s", results=tmp_path / "results", reports=tmp_path / "reports")
    lines = (tmp_path / "reports" / "s" / "leaderboard.md").read_text().splitlines()
    delta, lo, hi = bracket(table_row(lines, "lora", "### CrowS-Pairs (crows, 4 items)")[3])
    assert delta == pytest.approx(25.0) and lo <= delta <= hi
    assert (tmp_path / "reports" / "s" / CROWS_PLOT).exists()
