"""The Python API under the CLI: load, run, report."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.data.loaders import resolve_data_dir
from bench.errors import BenchError
from bench.results.query import expand_variants, label_settings, latest_records
from bench.results.store import Store
from bench.results.sweep import select_trials
from bench.run.quiet import quiet_libraries
from bench.spec.suite import REPO_ROOT, ReportSpec, Suite, check_path_name, load_suite

if TYPE_CHECKING:  # kept out of the import: bench.run.runner imports torch, and compare/report need none
    import pandas as pd

    from bench.results.compare import Comparison
    from bench.run.jobs import RunSummary

RESULTS_ENV = "PEFTBENCH_RESULTS"


def _home() -> Path:
    """The checkout's root; for an installed wheel (no checkout around the code), the working directory."""
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()


def results_dir(explicit: str | Path | None = None) -> Path:
    """``--results-dir``, else ``$PEFTBENCH_RESULTS``, else ``results/`` in the checkout (or working directory)."""
    return Path(explicit or os.environ.get(RESULTS_ENV) or _home() / "results")


def reports_dir(explicit: str | Path | None = None) -> Path:
    """``--reports-dir``, else ``reports/`` in the checkout (or, for an installed wheel, the working directory)."""
    return Path(explicit or _home() / "reports")


def progress_factory(quiet: bool) -> Callable[..., Any] | None:
    """A tqdm factory (bars with ETA on stderr), or None under ``quiet``."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    def make(**kwargs: Any) -> Any:
        return tqdm(dynamic_ncols=True, **kwargs)

    return make


def run_suite(suite: Suite | str, *, overrides: tuple[str, ...] = (), data_dir: str | Path | None = None,
              results: str | Path | None = None, force: bool = False, quiet: bool = False, jobs: int = 1,
              echo: Callable[[str], None] = print, allow_code_execution: bool = False,
              allow_unsafe_network: bool = False, executor: str = "local", address: str | None = None,
              retries: int = 0, in_process: bool = False) -> RunSummary:
    """Run a suite (name, path or loaded :class:`Suite`) into the store.

    ``allow_code_execution`` opts in to running model-written code (HumanEval) in the sandbox;
    ``allow_unsafe_network`` lets it run without namespaces where the kernel forbids them
    (docs/sandbox.md). Neither is part of a cell's identity. Cells run in a fresh local worker
    process each, ``jobs`` at a time, or with ``executor="ray"`` as Ray tasks on the cluster at
    ``address`` (docs/scaling.md); a cell whose worker is lost runs again up to ``retries``
    times. ``in_process`` runs them in this process instead (for a debugger).
    """
    from bench.run import runner
    from bench.run.jobs import Executor

    loaded = suite if isinstance(suite, Suite) else load_suite(suite, overrides)
    quiet_libraries()
    return runner.run_suite(loaded, Store(results_dir(results)), data_dir=resolve_data_dir(data_dir),
                            force=force, jobs=jobs, progress=progress_factory(quiet),
                            echo=(lambda _msg: None) if quiet else echo, allow_code_execution=allow_code_execution,
                            allow_unsafe_network=allow_unsafe_network,
                            executor=Executor(executor, address=address, retries=retries, in_process=in_process))


def build_report(suite: str, *, results: str | Path | None = None,
                 reports: str | Path | None = None) -> list[Path]:
    """Write ``reports/<suite>/`` from the store only (no model, no data): records and bias-probe item arrays.

    ``suite`` is a suite name or the YAML file that ``bench run --suite PATH`` ran (its ``name:``).
    """
    from bench.report import write_report
    from bench.report.bias import has_probe

    suite, options = _suite_and_options(suite)
    store = Store(results_dir(results))
    records = latest_records(store.records(suite))
    if not records:
        raise BenchError(f"no records for suite '{suite}' in {results_dir(results)}; run it first")
    # the bias probes' item arrays, for their bootstrap intervals (by the stored method id, before labelling)
    items = {r["run_id"]: arrays for r in records if has_probe(r)
             and (arrays := store.read_predictions(suite, r["spec"]["method"]["id"], r["run_id"])) is not None}
    shown, sweeps = select_trials(records)  # a swept method at its trial selected on validation accuracy
    return write_report(expand_variants(label_settings(shown)), reports_dir(reports) / suite, suite=suite,
                        items=items, report=options, sweeps=sweeps)


def _suite_and_options(suite: str) -> tuple[str, ReportSpec | None]:
    """The suite's name and its file's ``report:`` options (None when no file of that name loads).

    A ``.yaml``/``.yml`` argument is the suite file itself: it must load. A name must be able to
    name a folder under reports/.
    """
    if suite.endswith((".yaml", ".yml")):
        loaded = load_suite(suite)
        return loaded.name, loaded.report
    check_path_name(suite, "suite name", "bench report")  # it names the folder written under reports/
    try:
        return suite, load_suite(suite).report
    except BenchError:
        return suite, None


def summarize(suite: str, *, results: str | Path | None = None, interval: str = "t",
              variants: bool = True) -> pd.DataFrame:
    """One row per task × noise × model × method of a suite: mean, sample std and 95 % interval.

    A swept method has the row of its selected trial only, named with its setting (``lora (lr 3e-3)``),
    as on the leaderboard (:mod:`bench.results.sweep`).

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
    from bench.report.sweep import label_selected

    records = latest_records(Store(results_dir(results)).records(suite))
    if not records:
        raise BenchError(f"no records for suite '{suite}' in {results_dir(results)}; run it first")
    shown, sweeps = select_trials(records)
    records = label_settings(shown)
    return label_selected(aggregate(expand_variants(records) if variants else records, interval=interval), sweeps)


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
    from bench.run.runner import resolve_suite

    folder = resolve_data_dir(data_dir)
    return {name: len(resolve_suite(load_suite(name, overrides), folder)) for name in names}
