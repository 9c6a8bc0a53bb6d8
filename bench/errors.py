"""Errors the harness reports to users as one line and exit code 2."""

from __future__ import annotations

import difflib
import traceback
from collections.abc import Iterable


class BenchError(Exception):
    """A user-facing error: bad input, missing data, unknown names.

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    """


class CellError(BenchError):
    """A failure inside one cell (NaN loss, reload mismatch, out of memory).

    The runner stores the cell as failed with this message and goes on.
    """


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or a list of choices."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    if close:
        return f" (did you mean '{close[0]}'?)"
    shown = ", ".join(options[:20]) + (", ..." if len(options) > 20 else "")
    return f" (known: {shown})" if options else ""


def failure_text(err: Exception) -> str:
    """A failed cell's stored reason: the message of an expected error, else type, message and traceback tail."""
    if isinstance(err, BenchError):  # CellError included
        return str(err)
    return f"{type(err).__name__}: {err} | " + traceback.format_exc(limit=-3).replace("\n", " ")
