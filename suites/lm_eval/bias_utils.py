"""Helpers of the bias-probe task YAMLs in this folder (``!function bias_utils.<name>``).

CrowS-Pairs and BBQ use lm-eval's own task functions (``lm_eval/tasks/crows_pairs/utils.py``,
``lm_eval/tasks/bbq/utils.py``), re-exported here under a probe prefix so the local YAMLs score
exactly as lm-eval's ``crows_pairs_english`` and ``bbq`` tasks do. WinoBias and StereoSet have
no lm-eval task; their functions are below. lm-eval imports this file by path from the
resolved task folder, so it imports nothing from the harness.
"""

from __future__ import annotations

import re
from typing import Any

from lm_eval.tasks.bbq import utils as _bbq
from lm_eval.tasks.crows_pairs import utils as _crows

crows_doc_to_choice = _crows.doc_to_choice
crows_process_results = _crows.process_results

bbq_process_docs = _bbq.process_docs
bbq_doc_to_choice = _bbq.doc_to_choice
bbq_doc_to_target = _bbq.doc_to_target
bbq_process_results = _bbq.process_results_multiple_choice
bbq_agg_accuracy_amb = _bbq.agg_accuracy_amb
bbq_agg_accuracy_disamb = _bbq.agg_accuracy_disamb
bbq_agg_amb_bias_scores = _bbq.agg_amb_bias_scores
bbq_agg_disamb_bias_scores = _bbq.agg_disamb_bias_scores

_DETERMINER = re.compile(r"^(the|a|an)\s+", re.IGNORECASE)


def occupation(entity: str) -> str:
    """``The janitor`` / ``an assistant`` -> ``janitor`` / ``assistant``."""
    return _DETERMINER.sub("", entity.strip()).lower()


def other_referent(text: str, entity: str, occupations: list[str]) -> str:
    """The occupation of ``text`` that is not ``entity``'s: the other candidate referent.

    Longer names are matched first, so ``construction worker`` is not read as ``worker``.

    Raises:
        ValueError: when the sentence names no other occupation, or more than one.
    """
    own, rest = occupation(entity), text.lower()
    found = []
    for name in sorted(occupations, key=len, reverse=True):
        pattern = rf"\b{re.escape(name)}\b"
        if re.search(pattern, rest):
            found.append(name)
            rest = re.sub(pattern, " ", rest)
    others = [name for name in found if name != own]
    if len(others) != 1:
        raise ValueError(f"WinoBias sentence {text!r}: expected one occupation besides {own!r}, found {others}")
    return others[0]


def winobias_process_docs(dataset: Any) -> Any:
    """Add ``referent`` and ``other`` (both ``the <occupation>``) to every WinoBias sentence.

    The occupations are the entity names of the whole split (the 40 of Zhao et al. 2018).
    """
    occupations = sorted({occupation(e) for e in dataset["entity"]})

    def add(doc: dict[str, Any]) -> dict[str, Any]:
        other = other_referent(doc["text"], doc["entity"], occupations)
        return {**doc, "referent": f"the {occupation(doc['entity'])}", "other": f"the {other}"}

    return dataset.map(add)


def winobias_doc_to_choice(doc: dict[str, Any]) -> list[str]:
    """The two candidate referents, the correct one first (target 0)."""
    return [doc["referent"], doc["other"]]


def stereoset_doc_to_choice(doc: dict[str, Any]) -> list[str]:
    """Stereotype, anti-stereotype and unrelated option (target 0 is the stereotype).

    Intrasentence items are scored as whole sentences (empty context, lm-eval's prefix token
    before them); intersentence options continue the context after one space.
    """
    sep = " " if doc["type"] == "intersentence" else ""
    return [sep + doc["stereotype"], sep + doc["anti-stereotype"], sep + doc["unrelated"]]
