"""The Python API under the CLI: load, run, report."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.data.loaders import resolve_data_dir
from bench.errors import BenchError
from bench.results.store import Store
from bench.spec.suite import REPO_ROOT, Suite, load_suite

if TYPE_CHECKING:  # kept out of the import: bench.run.runner imports torch, and compare/report need none
    import pandas as pd

    from bench.results.compare import Comparison
    from bench.run.runner import RunSummary

RESULTS_ENV = "PEFTBENCH_RESULTS"


def results_dir(explicit: str | Path | None = None) -> Path:
    """``--results-dir``, else ``$PEFTBENCH_RESULTS``, else the repository's ``results/``."""
    return Path(explicit or os.environ.get(RESULTS_ENV) or REPO_ROOT / "results")


def reports_dir(explicit: str | Path | None = None) -> Path:
    """``--reports-dir``, else the repository's ``reports/``."""
    return Path(explicit or REPO_ROOT / "reports")


def progress_factory(quiet: bool) -> Callable[..., Any] | None:
    """A tqdm factory (bars with ETA on stderr), or None under ``quiet``."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    def make(**kwargs: Any) -> Any:
        return tqdm(dynamic_ncols=True, **kwargs)

    return make


def quiet_libraries() -> None:
    """Silence transformers' load reports and progress bars (our own bars stay)."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")
    import transformers

    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def run_suite(suite: Suite | str, *, overrides: tuple[str, ...] = (), data_dir: str | Path | None = None,
              results: str | Path | None = None, force: bool = False, quiet: bool = False, jobs: int = 1,
              echo: Callable[[str], None] = print, allow_code_execution: bool = False,
              allow_unsafe_network: bool = False) -> RunSummary:
    """Run a suite (name, path or loaded :class:`Suite`) into the store.

    ``allow_code_execution`` opts in to running model-written code (HumanEval) in the sandbox;
    ``allow_unsafe_network`` lets it run without namespaces where the kernel forbids them
    (docs/sandbox.md). Neither is part of a cell's identity.
    """
    from bench.run import runner

    loaded = suite if isinstance(suite, Suite) else load_suite(suite, overrides)
    quiet_libraries()
    return runner.run_suite(loaded, Store(results_dir(results)), data_dir=resolve_data_dir(data_dir),
                            force=force, jobs=jobs, progress=progress_factory(quiet),
                            echo=(lambda _msg: None) if quiet else echo, allow_code_execution=allow_code_execution,
                            allow_unsafe_network=allow_unsafe_network)


def latest_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per run id: its newest success, else its newest attempt."""
    best: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: str(r.get("finished_at"))):
        old = best.get(record["run_id"])
        if old is None or record["status"] == "success" or old["status"] != "success":
            best[record["run_id"]] = record
    return list(best.values())


def _flat_spec(spec: Any, prefix: str = "") -> dict[str, str]:
    if not isinstance(spec, dict):
        return {prefix[:-1]: json.dumps(spec, sort_keys=True)}
    out: dict[str, str] = {}
    for key, value in spec.items():
        out.update(_flat_spec(value, f"{prefix}{key}."))
    return out


def _short(value: str, width: int = 40) -> str:
    value = value.strip('"')
    return value if len(value) <= width else value[: width - 1] + "…"


def label_settings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep runs of different settings apart where they would share a cell.

    A cell (task, noise, model, method id) is meant to hold the seeds of one setting. When a
    store holds runs of one cell that differ in more than the seed (a base model next to its
    SFT via ``--set train.epochs=0``, or two learning rates), each run's method id gets the
    settings that tell them apart, e.g. ``lora (train.epochs=0)``, so that leaderboards and
    comparisons never average different settings as if they were seeds.
    """
    from bench.report.markdown import cell_of

    flats = [{k: v for k, v in _flat_spec(r.get("spec") or {}).items() if k != "seed"} for r in records]
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[cell_of(record)].append(i)
    out = list(records)
    for members in groups.values():
        keys = sorted({k for i in members for k in flats[i]})
        varying = [k for k in keys if len({flats[i].get(k) for i in members}) > 1]
        for i in members if varying else ():
            label = ", ".join(f"{k}={_short(flats[i].get(k, '-'))}" for k in varying)
            record = records[i]
            spec = {**record["spec"], "method": {**record["spec"].get("method", {})}}
            spec["method"]["id"] = f"{cell_of(record)[5]} ({label})"
            out[i] = {**record, "spec": spec}
    return out


def expand_variants(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add one leaderboard row per prediction variant (``metrics["variants"]``) of a record.

    The copy keeps the run's efficiency figures and is shown as ``<method id> (<variant>)``.
    """
    out = []
    for record in records:
        out.append(record)
        for name, metrics in (record.get("metrics") or {}).get("variants", {}).items():
            spec = {**record["spec"], "method": {**record["spec"]["method"]}}
            spec["method"]["id"] = f"{spec['method']['id']} ({name})"
            out.append({**record, "spec": spec, "metrics": metrics, "variant": name})
    return out


def build_report(suite: str, *, results: str | Path | None = None,
                 reports: str | Path | None = None) -> list[Path]:
    """Write ``reports/<suite>/`` from the store only (no model, no data)."""
    from bench.report import write_report

    records = latest_records(Store(results_dir(results)).records(suite))
    if not records:
        raise BenchError(f"no records for suite '{suite}' in {results_dir(results)}; run it first")
    return write_report(expand_variants(label_settings(records)), reports_dir(reports) / suite, suite=suite)


def summarize(suite: str, *, results: str | Path | None = None, interval: str = "t",
              variants: bool = True) -> pd.DataFrame:
    """One row per task × noise × model × method of a suite: mean, sample std and 95 % interval.

    Args:
        suite: Suite name (its folder in the store).
        results: The store (default: :func:`results_dir`).
        interval: ``"t"`` (Student-t interval of the mean) or ``"bootstrap"`` (percentile
            bootstrap over seeds, seed 0).
        variants: Include prediction-variant rows (``<method id> (<variant>)``), as the
            leaderboard does.

    Returns:
        The frame of :func:`bench.report.markdown.aggregate` (``<metric>_mean``, ``_std``,
        ``_n``, ``_ci_low``, ``_ci_high`` per metric).

    Raises:
        BenchError: If the store has no record of the suite.
    """
    from bench.report.markdown import aggregate

    records = latest_records(Store(results_dir(results)).records(suite))
    if not records:
        raise BenchError(f"no records for suite '{suite}' in {results_dir(results)}; run it first")
    records = label_settings(records)
    return aggregate(expand_variants(records) if variants else records, interval=interval)


def compare(baseline: str | Path, new: str | Path, *, suite: str | None = None, methods: tuple[str, ...] = (),
            fail: tuple[str, ...] = (), alpha: float = 0.05, n_resamples: int = 1000,
            correction: str = "holm") -> Comparison:
    """Compare two result stores cell by cell with a seed-aware test; see :mod:`bench.results.compare`.

    Each side is a store root, a suite folder inside one or a method folder. ``fail`` holds
    gate rules such as ``accuracy:-1pp``; ``Comparison.failures()`` lists the cells that break
    one significantly at ``alpha`` after the ``correction`` for the number of gated tests
    (``holm`` or ``none``). (Not re-exported as ``bench.results.compare``: that name is the module.)
    """
    from bench.results.compare import compare as compare_stores

    return compare_stores(baseline, new, suite=suite, methods=methods, fail=fail, alpha=alpha,
                          n_resamples=n_resamples, correction=correction)


def validate_suites(names: list[str], *, overrides: tuple[str, ...] = (),
                    data_dir: str | Path | None = None) -> dict[str, int]:
    """Resolve every cell of each suite (method configs and data files) without running.

    Returns:
        The number of cells per suite.
    """
    from bench.spec.cells import plan, resolve_spec

    folder = resolve_data_dir(data_dir)
    counts = {}
    for name in names:
        cells = plan(load_suite(name, overrides))
        for cell in cells:
            resolve_spec(cell, folder)
        counts[name] = len(cells)
    return counts
