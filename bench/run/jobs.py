"""The runner's bookkeeping: jobs, the summary of a run, and storing each outcome as it arrives."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.results.record import RunRecord, now
from bench.results.store import Store
from bench.run.cell import CellResult, summary_line
from bench.run.env import environment
from bench.spec.cells import ResolvedCell

Echo = Callable[[str], None]


@dataclass
class RunSummary:
    """What a run did, cell by cell."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    """Cells whose worker was lost and that were run again (``--retries``), once per retry."""


#: Where cells can run: ``local`` worker processes (``--jobs N``) or a Ray cluster.
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Executor:
    """Where a run's cells execute: ``bench run --executor``, ``--address``, ``--retries``, ``--in-process``."""

    kind: str = "local"
    """``local``: a fresh worker process per cell, ``--jobs`` at a time; ``ray``: a Ray task per cell."""
    address: str | None = None
    """Ray only: ``auto``, ``HOST:PORT`` of a running cluster, or None to start a local Ray."""
    retries: int = 0
    """How often a cell whose worker (or Ray node) was lost runs again."""
    in_process: bool = False
    """Local only, one job: run cells in this process (for a debugger; memory figures then include
    whatever ran before in it)."""

    def check(self, jobs: int) -> None:
        """Refuse options that do not go together.

        Raises:
            BenchError: one line saying which.
        """
        if self.kind not in EXECUTORS:
            raise BenchError(f"unknown executor '{self.kind}' (known: {', '.join(EXECUTORS)})")
        if self.retries < 0:
            raise BenchError(f"--retries must be >= 0, got {self.retries}")
        if self.kind != "ray" and self.address is not None:
            raise BenchError("--address names a Ray cluster: it needs --executor ray")
        if self.kind == "ray" and jobs != 1:
            raise BenchError("--jobs is for the local executor; a Ray cluster runs as many cells at once as "
                             "their resources (the suite's resources:) and its nodes allow")
        if self.in_process and (self.kind != "local" or jobs != 1):
            raise BenchError("--in-process runs cells one at a time in this process: it takes neither --jobs "
                             "above 1 nor --executor ray")


@dataclass(frozen=True)
class Job:
    """A cell to execute, with its position in the suite (``[3/24]``)."""

    cell: ResolvedCell
    tag: str


def _where(job: Job) -> tuple[str, str, str]:
    """(suite, method id, run id) of a job's cell, as the store keys it."""
    spec = job.cell.spec
    return spec["suite"], spec["method"]["id"], job.cell.run_id


def rescue(record: RunRecord) -> Path:
    """Write a record the store could not take to the system temporary folder; return its path.

    Copy it into ``<store>/<suite>/<method id>/<run_id>.json`` once the store is writable again
    (predictions are not kept: report and compare work without them).
    """
    path = Path(tempfile.gettempdir()) / f"peftbench-unstored-{record.run_id}-{os.getpid()}.json"
    path.write_text(json.dumps(record.to_json(), indent=1) + "\n", encoding="utf-8")
    return path


def interrupted(job: Job, status: str, error: str) -> RunRecord:
    """The record of a cell that did not run to its end (canceled, or its worker died)."""
    return RunRecord(run_id=job.cell.run_id, kind=job.cell.kind, spec=job.cell.spec, env=environment("unknown"),
                     status=status, error=error, started_at=now(), finished_at=now())


class Finish:
    """Stores each outcome as it arrives, echoes its line and advances the bar.

    ``retries``: how often a cell whose worker was lost (:meth:`lost`) runs again.
    """

    def __init__(self, store: Store, summary: RunSummary, echo: Echo, bar: Any, *, force: bool = False,
                 retries: int = 0) -> None:
        self.store, self.summary, self.echo, self.bar = store, summary, echo, bar
        self.force, self.retries = force, retries
        self._lost: dict[str, int] = {}  # run id -> how often its worker was lost

    def start(self, job: Job) -> bool:
        """Claim the job's cell for this run (:mod:`bench.results.claims`); False when it is skipped.

        Skipped: another run holds its claim, or stored its record after this run looked.
        """
        cell, where = job.cell, _where(job)
        if not self.store.claim(*where):
            self._skip(job, f"claimed by {self.store.claimed_by(*where)} (another bench run)")
            return False
        if not self.force and self.store.succeeded(*where):
            self.store.release(*where)
            self._skip(job, f"stored ({cell.run_id}) by another run meanwhile")
            return False
        return True

    def _skip(self, job: Job, why: str) -> None:
        self.summary.skipped.append(job.cell.run_id)
        self.echo(f"{job.tag} {job.cell.label}: {why}, skipped")
        if self.bar is not None:
            self.bar.update(1)

    def __call__(self, job: Job, result: CellResult, seconds: float) -> None:
        """Store one outcome (record and predictions), echo its line, advance the bar."""
        try:
            self._store(job, result, seconds)
        finally:
            self.store.release(*_where(job))

    def _store(self, job: Job, result: CellResult, seconds: float) -> None:
        record, rid = result.record, job.cell.run_id
        try:
            self.summary.paths.append(self.store.write(record, result.predictions))
        except OSError as err:  # the store went away or filled up after the up-front check
            self.summary.failed.append(rid)
            self.echo(f"{job.tag} {job.cell.label}: NOT STORED ({rid}): {err.strerror or err}; "
                      f"the record was saved to {rescue(record)}")
            if self.bar is not None:
                self.bar.update(1)
            return
        if record.status == "success":
            self.summary.ran.append(rid)
            line, warning = summary_line(record)
            self.echo(f"{job.tag} {job.cell.label}: {line} ({seconds:.0f} s, {rid})" + warning)
        else:
            self.summary.failed.append(rid)
            self.echo(f"{job.tag} {job.cell.label}: FAILED ({rid}): {record.error}")
        if self.bar is not None:
            self.bar.update(1)

    def lost(self, job: Job, reason: str) -> bool:
        """Store a cell whose worker was lost (died, or its node) as failed with ``reason``; True to run it again.

        It runs again while it has been lost at most ``retries`` times; each lost attempt keeps
        its failed record.
        """
        rid = job.cell.run_id
        count = self._lost[rid] = self._lost.get(rid, 0) + 1
        if count > self.retries:
            self(job, CellResult(interrupted(job, "failed", reason)), 0.0)
            return False
        try:
            self.store.write(interrupted(job, "failed", reason))
        except OSError as err:
            self.echo(f"{job.tag} {job.cell.label}: its failed attempt was not stored: {err.strerror or err}")
        finally:
            self.store.release(*_where(job))
        self.summary.retried.append(rid)
        self.echo(f"{job.tag} {job.cell.label}: FAILED ({rid}): {reason}; running it again "
                  f"(retry {count} of {self.retries})")
        return True

    def abandon(self, job: Job) -> None:
        """Drop the claim on a cell whose run was given up without a record (the run stops with an error)."""
        self.store.release(*_where(job))

    def canceled(self, job: Job) -> None:
        """Store a cell in flight at Ctrl-C (or SIGTERM) as canceled."""
        try:
            self.store.write(interrupted(job, "canceled", "interrupted by the user"))
        finally:
            self.store.release(*_where(job))
        self.echo(f"{job.tag} {job.cell.label}: canceled ({job.cell.run_id})")
