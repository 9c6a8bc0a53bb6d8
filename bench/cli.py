"""``bench``: a thin argparse layer over :mod:`bench.api`.

Every user error is one line on stderr and exit code 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from bench.errors import BenchError


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.data.loaders import resolve_data_dir
    from bench.spec.generation import require_code_execution
    from bench.spec.suite import load_suite

    # a typo in the suite, a --set or the data dir fails in a moment, before torch is imported
    suite = load_suite(args.suite, tuple(args.set))
    require_code_execution(suite.name, suite.tasks, allowed=args.allow_code_execution)
    resolve_data_dir(args.data_dir)
    from bench import api

    summary = api.run_suite(suite, data_dir=args.data_dir, results=args.results_dir, force=args.force,
                            quiet=args.quiet, jobs=args.jobs, allow_code_execution=args.allow_code_execution,
                            allow_unsafe_network=args.allow_unsafe_network, executor=args.executor,
                            address=args.address, retries=args.retries, in_process=args.in_process)
    retried = f", {len(summary.retried)} retried" if summary.retried else ""
    print(f"{len(summary.ran)} ran, {len(summary.skipped)} skipped (already stored), "
          f"{len(summary.failed)} failed{retried}; results in {api.results_dir(args.results_dir)}")
    return 1 if summary.failed else 0


def _cmd_ls(args: argparse.Namespace) -> int:
    # imports stay light: listing never imports torch or a method module
    from bench.data.loaders import dataset_names, resolve_data_dir
    from bench.sdk.registry import method_names
    from bench.spec.suite import suite_names

    what = args.what
    if what in ("all", "suites"):
        print("suites:   " + ", ".join(suite_names()))
    if what in ("all", "methods"):
        print("methods:  " + ", ".join(method_names()))
    if what in ("all", "datasets"):
        try:
            folder = resolve_data_dir(args.data_dir)
            print(f"datasets: {', '.join(dataset_names(folder))}  ({folder})")
        except BenchError as err:
            print(f"datasets: none ({err})")
    if what in ("all", "models"):
        print("models:   minilm (embedded), random:tiny-bert, random:minilm-shape, "
              "or any HF model name / local folder")
        print("          generation tasks: smollm2 (embedded), random:tiny-llama, random:smollm2-shape, "
              "or any HF causal LM name / local folder")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from bench import api
    from bench.spec.suite import suite_names, suites_dir

    if args.suite and args.suite_option and args.suite != args.suite_option:
        raise BenchError(f"validate: two suites given ('{args.suite}' and --suite '{args.suite_option}'); name one")
    suite = args.suite or args.suite_option
    names = suite_names() if args.all or not suite else [suite]
    if not names:  # a wrong $PEFTBENCH_SUITES or a broken install must not pass as "all valid"
        raise BenchError(f"validate: no suites in {suites_dir()}")
    counts = api.validate_suites(names, overrides=tuple(args.set), data_dir=args.data_dir)
    for name, n in counts.items():
        print(f"ok  {name}: {n} cells")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bench import api

    paths = api.build_report(args.suite, results=args.results_dir, reports=args.reports_dir)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from bench import api
    from bench.report.comparison import format_markdown, format_text

    result = api.compare(args.baseline, args.new, suite=args.suite, methods=tuple(args.method),
                         fail=tuple(args.fail), alpha=args.alpha, n_resamples=args.resamples,
                         correction=args.correction)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(format_markdown(result) if args.markdown else format_text(result), end="")
    return 1 if result.failures() else 0


def _whole_number(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {least}, got '{text}'")
        return value

    return parse


_positive_int = _whole_number(1)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as the CLI's other errors: one ``error:`` line and exit 2.

    (argparse's own form is the usage block, then ``bench run: error: ...``.) Subparsers are made
    of this class too: ``add_subparsers`` takes the parent's class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _run_parser(sub: Any) -> argparse.ArgumentParser:
    """``bench run``'s arguments (``--data-dir`` and ``--results-dir`` are added with the others')."""
    run: argparse.ArgumentParser = sub.add_parser("run", help="run a suite (skips cells already stored)")
    run.add_argument("--suite", required=True, help="suite name (see `bench ls`) or path to a YAML file")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a suite value, e.g. --set train.epochs=1 (repeatable)")
    run.add_argument("--force", action="store_true", help="rerun cells that already succeeded")
    run.add_argument("--quiet", action="store_true", help="no progress bars or per-cell lines")
    run.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                     help="run cells in N worker processes, each with its share of the CPU cores (default 1)")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local: a fresh worker process per cell (default); ray: a Ray task per cell, with "
                          "the suite's resources: (docs/scaling.md)")
    run.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                     help="with --executor ray: the cluster to join (default: start a local Ray)")
    run.add_argument("--retries", type=_whole_number(0), default=0, metavar="N",
                     help="run a cell whose worker (or Ray node) was lost up to N more times (default 0)")
    run.add_argument("--in-process", action="store_true",
                     help="run cells in this process (for a debugger; memory figures then include earlier cells)")
    run.add_argument("--allow-code-execution", action="store_true",
                     help="run model-written code (HumanEval) in the sandbox; required by suites that do")
    run.add_argument("--allow-unsafe-network", action="store_true",
                     help="where the kernel gives the sandbox no namespaces, run programs with resource "
                          "limits only (no network or filesystem isolation; docs/sandbox.md)")
    return run


def parser() -> argparse.ArgumentParser:
    """The ``bench`` argument parser."""
    top = _Parser(prog="bench", description="PEFT benchmark harness")
    sub = top.add_subparsers(dest="command", required=True)
    run = _run_parser(sub)
    ls = sub.add_parser("ls", help="list suites, methods, datasets, models")
    ls.add_argument("what", nargs="?", default="all", choices=["all", "suites", "methods", "datasets", "models"])
    validate = sub.add_parser("validate", help="resolve suites without running them")
    validate.add_argument("suite", nargs="?", help="one suite (default: all)")
    validate.add_argument("--suite", dest="suite_option", default=None, metavar="SUITE",
                          help="one suite, as in `bench run --suite` (same as the positional name)")
    validate.add_argument("--all", action="store_true", help="every suite in suites/")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    report = sub.add_parser("report", help="write reports/<suite>/ from the store")
    report.add_argument("--suite", required=True)
    report.add_argument("--reports-dir", default=None)
    compare = sub.add_parser("compare", help="compare two result stores cell by cell (seed-aware); gate on --fail")
    compare.add_argument("baseline", help="store root, suite folder or method folder of the baseline")
    compare.add_argument("new", help="store root, suite folder or method folder of the new results")
    compare.add_argument("--fail", action="append", default=[], metavar="METRIC:THRESHOLD",
                         help="exit 1 when a delta is significantly beyond this, e.g. accuracy:-1pp, "
                              "ece:+0.01, nll:+0.05 (repeatable)")
    compare.add_argument("--alpha", type=float, default=0.05, help="significance level of --fail (default 0.05)")
    compare.add_argument("--correction", choices=("holm", "none"), default="holm",
                         help="adjust the gated p-values for the number of gated tests (default holm)")
    compare.add_argument("--resamples", type=int, default=1000,
                         help="paired-bootstrap resamples for cells with one seed per side (default 1000)")
    compare.add_argument("--markdown", action="store_true", help="print a Markdown table (for a PR comment)")
    compare.add_argument("--suite", default=None, help="compare only this suite")
    compare.add_argument("--method", action="extend", nargs="+", default=[], metavar="M",
                         help="compare only these method ids")
    for p in (run, ls, validate):
        p.add_argument("--data-dir", default=None, help="dataset folder root (or $PEFTBENCH_DATA_DIR)")
    for p in (run, report):
        p.add_argument("--results-dir", default=None, help="the store (default: results/)")
    run.set_defaults(func=_cmd_run)
    ls.set_defaults(func=_cmd_ls)
    validate.set_defaults(func=_cmd_validate)
    report.set_defaults(func=_cmd_report)
    compare.set_defaults(func=_cmd_compare)
    return top


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a killed job) stores the cell in flight as canceled, like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args))
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the cells in flight were stored as canceled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
