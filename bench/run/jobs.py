"""The runner's bookkeeping: jobs, the summary of a run, and storing each outcome as it arrives."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    """Stores each outcome as it arrives, echoes its line and advances the bar."""

    def __init__(self, store: Store, summary: RunSummary, echo: Echo, bar: Any, *, force: bool = False) -> None:
        self.store, self.summary, self.echo, self.bar = store, summary, echo, bar
        self.force = force

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

    def canceled(self, job: Job) -> None:
        """Store a cell in flight at Ctrl-C (or SIGTERM) as canceled."""
        try:
            self.store.write(interrupted(job, "canceled", "interrupted by the user"))
        finally:
            self.store.release(*_where(job))
        self.echo(f"{job.tag} {job.cell.label}: canceled ({job.cell.run_id})")
