"""Errors the harness reports to users as one line and exit code 2."""

from __future__ import annotations

import difflib
import re
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


#: The figures of a CUDA out-of-memory message, in torch's current wording and its older one.
_OOM_FIGURES = (
    re.compile(r"Tried to allocate (?P<ask>[\d.]+ [KMGT]?i?B)\. GPU (?P<gpu>\d+) has a total capacity of "
               r"(?P<total>[\d.]+ [KMGT]?i?B) of which (?P<free>[\d.]+ [KMGT]?i?B) is free"),
    re.compile(r"Tried to allocate (?P<ask>[\d.]+ [KMGT]?i?B) \(GPU (?P<gpu>\d+); (?P<total>[\d.]+ [KMGT]?i?B) "
               r"total capacity;.*?(?P<free>[\d.]+ [KMGT]?i?B) free"),
)
_OOM_WORDS = ("CUDA out of memory", "CUDA error: out of memory", "HIP out of memory", "MPS backend out of memory")


def out_of_gpu_memory(err: BaseException) -> str | None:
    """``out of GPU memory: <figure>`` for an accelerator's out-of-memory error, else None.

    The figure is what torch's message says (``tried to allocate 2.00 GiB with 1.02 GiB free of
    79.15 GiB on GPU 0``), or its first line where it gives no figures. Matched by type name and
    message, so this module needs no torch: ``torch.OutOfMemoryError`` (``torch.cuda``'s), or a
    ``RuntimeError`` that some kernels raise instead with the same words.
    """
    message = str(err)
    by_type = type(err).__name__ == "OutOfMemoryError" and type(err).__module__.split(".")[0] == "torch"
    if not by_type and not (isinstance(err, RuntimeError) and any(w in message for w in _OOM_WORDS)):
        return None
    for pattern in _OOM_FIGURES:
        found = pattern.search(message)
        if found:
            return (f"out of GPU memory: tried to allocate {found['ask']} with {found['free']} free of "
                    f"{found['total']} on GPU {found['gpu']}")
    first = (message.strip().splitlines() or [type(err).__name__])[0]
    return f"out of GPU memory: {first}"


def failure_text(err: Exception) -> str:
    """A failed cell's stored reason: the message of an expected error, else type, message and traceback tail.

    Running out of GPU memory, in any phase, is ``out of GPU memory: <figure>``
    (:func:`out_of_gpu_memory`).
    """
    if isinstance(err, BenchError):  # CellError included
        return str(err)
    oom = out_of_gpu_memory(err)
    if oom is not None:
        return oom
    return f"{type(err).__name__}: {err} | " + traceback.format_exc(limit=-3).replace("\n", " ")
