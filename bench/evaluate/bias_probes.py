"""Bias probes: per-item arrays from lm-eval's logged samples, their metrics, and data checks.

A task template in ``suites/lm_eval/`` is a bias probe when its ``metadata`` names one
(``bias_probe: crows_pairs | bbq | winobias | stereoset``). lm-eval scores its items (one
loglikelihood per option, logged with ``log_samples``); this module reads each item's option
loglikelihoods and document fields into aligned arrays (:data:`bench.metrics.bias.ITEM_FIELDS`),
which are stored with the run's predictions so that reports and ``bench compare`` can recompute
any probe metric on resampled items. The metrics themselves are :mod:`bench.metrics.bias`.
Likelihoods are lm-eval's: the sum of the option's token log-probabilities (no length
normalisation), the same for every option of an item.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.errors import BenchError
from bench.metrics.bias import PROBES

Sample = Mapping[str, Any]
Items = dict[str, NDArray[Any]]


def probe_of(config: Mapping[str, Any]) -> str | None:
    """The probe a task config declares (``metadata.bias_probe``), or None.

    Raises:
        BenchError: a probe name the harness does not know.
    """
    probe = (config.get("metadata") or {}).get("bias_probe")
    if probe is not None and probe not in PROBES:
        raise BenchError(f"task '{config.get('task')}': unknown bias_probe '{probe}' (known: {', '.join(PROBES)})")
    return None if probe is None else str(probe)


def _lls(sample: Sample) -> list[float]:
    return [float(r[0]) for r in sample["filtered_resps"]]


def _crows(samples: Sequence[Sample]) -> Items:
    lls = np.asarray([_lls(s) for s in samples], dtype=np.float64).reshape(-1, 2)
    return {"ll_more": lls[:, 0], "ll_less": lls[:, 1],
            "bias_type": np.asarray([str(s["doc"]["bias_type"]) for s in samples])}


def _bbq(samples: Sequence[Sample]) -> Items:
    # lm-eval's process_results logs (acc, n_biased_answers, n_non_unknown_answers, is_disambiguated)
    rows = [tuple(float(np.asarray(v)) for v in s["disamb_bias_score"]) for s in samples]
    values = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return {"correct": values[:, 0], "biased": values[:, 1], "non_unknown": values[:, 2],
            "disambig": values[:, 3].astype(bool),
            "category": np.asarray([str(s["doc"]["category"]) for s in samples])}


def _winobias(samples: Sequence[Sample]) -> Items:
    lls = np.asarray([_lls(s) for s in samples], dtype=np.float64).reshape(-1, 2)
    return {"correct": np.asarray([float(s["acc"]) for s in samples]), "ll_referent": lls[:, 0], "ll_other": lls[:, 1],
            "pro": np.asarray([s["doc"]["stereotype"] == "pro" for s in samples], dtype=bool),
            "type": np.asarray([int(s["doc"]["type"]) for s in samples], dtype=np.int64)}


def _stereoset(samples: Sequence[Sample]) -> Items:
    lls = np.asarray([_lls(s) for s in samples], dtype=np.float64).reshape(-1, 3)
    return {"ll_stereotype": lls[:, 0], "ll_anti": lls[:, 1], "ll_unrelated": lls[:, 2],
            "target": np.asarray([str(s["doc"]["target"]) for s in samples]),
            "bias_type": np.asarray([str(s["doc"]["bias_type"]) for s in samples]),
            "intra": np.asarray([s["doc"]["type"] == "intrasentence" for s in samples], dtype=bool)}


_EXTRACT: dict[str, Callable[[Sequence[Sample]], Items]] = {
    "crows_pairs": _crows, "bbq": _bbq, "winobias": _winobias, "stereoset": _stereoset}


def probe_items(probe: str, samples: Sequence[Sample]) -> Items:
    """Aligned per-item arrays of one probe, sorted by ``doc_id`` (which is included)."""
    rows = sorted(samples, key=lambda s: int(s["doc_id"]))
    items = _EXTRACT[probe](rows)
    items["doc_id"] = np.asarray([int(s["doc_id"]) for s in rows], dtype=np.int64)
    return items


def probe_metrics(probe: str, items: Mapping[str, NDArray[Any]]) -> dict[str, float]:
    """The probe's metrics (:mod:`bench.metrics.bias`) over its items."""
    return PROBES[probe](items)


#: Fields each probe's data rows must have, and those among them that must be non-empty text.
REQUIRED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "crows_pairs": (("sent_more", "sent_less", "bias_type"), ("sent_more", "sent_less", "bias_type")),
    "bbq": (("context", "question", "ans0", "ans1", "ans2", "label", "context_condition", "question_polarity",
             "category", "answer_info", "additional_metadata"), ("question", "category", "context_condition")),
    "winobias": (("text", "entity", "pronoun", "stereotype", "type"), ("text", "entity", "pronoun")),
    "stereoset": (("type", "target", "bias_type", "context", "stereotype", "anti-stereotype", "unrelated"),
                  ("target", "bias_type", "stereotype", "anti-stereotype", "unrelated")),
}
#: Closed sets of values, per probe and field.
CHOICES: dict[str, dict[str, tuple[Any, ...]]] = {
    "bbq": {"context_condition": ("ambig", "disambig"), "question_polarity": ("neg", "nonneg"), "label": (0, 1, 2)},
    "winobias": {"stereotype": ("pro", "anti"), "type": (1, 2)},
    "stereoset": {"type": ("intrasentence", "intersentence")},
}


def _row_problem(probe: str, row: Any) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    fields, texts = REQUIRED[probe]
    missing = [f for f in fields if f not in row]
    if missing:
        return f"missing field{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)}"
    empty = [f for f in texts if not isinstance(row[f], str) or not row[f].strip()]
    if empty:
        return f"empty {', '.join(repr(f) for f in empty)}"
    for field, allowed in CHOICES.get(probe, {}).items():
        if row[field] not in allowed:
            return f"'{field}' is {row[field]!r}, not one of {', '.join(repr(a) for a in allowed)}"
    if probe == "stereoset" and row["type"] == "intrasentence" and "BLANK" not in row["context"]:
        return "intrasentence context without BLANK"
    if probe == "bbq" and not re.search(r"\S", str(row["ans0"]) + str(row["ans1"]) + str(row["ans2"])):
        return "empty answers"
    return None


def _check_referents(path: Path, rows: list[tuple[int, dict[str, Any]]], helper: Any) -> None:
    """Every WinoBias sentence names exactly one occupation besides its entity (the other candidate)."""
    occupations = sorted({helper.occupation(row["entity"]) for _, row in rows})
    for line_no, row in rows:
        try:
            helper.other_referent(row["text"], row["entity"], occupations)
        except ValueError as err:
            raise BenchError(f"{path}:{line_no}: {err}") from None


def check_probe_data(probe: str, path: Path, helper: Any = None) -> int:
    """Check every row of a probe's data file; return the number of rows.

    ``helper`` is the template's helper module (``bias_utils``): for WinoBias its
    ``other_referent`` must find the second candidate in every sentence.

    Raises:
        BenchError: ``<file>:<line>: <problem>`` for the first bad row, or an empty file.
    """
    count, rows = 0, []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise BenchError(f"{path}: not UTF-8 text (byte {err.start})") from None
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise BenchError(f"{path}:{line_no}: not JSON ({err.msg})") from None
        problem = _row_problem(probe, row)
        if problem:
            raise BenchError(f"{path}:{line_no}: {probe} item {problem}")
        count += 1
        rows.append((line_no, row))
    if count == 0:
        raise BenchError(f"{path}: no {probe} items")
    if probe == "winobias" and helper is not None:
        _check_referents(path, rows, helper)
    return count
