"""Bias probes end to end on a tiny random Llama: lm-eval scores the local YAMLs, the harness reads the items.

Outcomes are predictable without knowing the weights: a sentence that another sentence extends
(same tokens, then more) always has the higher summed loglikelihood, because every extra token
adds a negative log-probability. The loglikelihoods themselves are checked against a reference
forward pass, and the BBQ bias scores against lm-eval's own aggregation of the same samples.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.errors import BenchError
from bench.evaluate.bias_probes import check_probe_data
from bench.evaluate.generation import evaluate_model, per_item
from bench.evaluate.lm_tasks import check_probe_template, configs_hash, resolve_tasks, templates_dir
from bench.metrics.bias import crows_pairs, stereoset
from bench.spec.generation import EvalSpec
from tests.causal_helpers import write_jsonl

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
#: (sent_more, sent_less): the first extends the second in pairs 0-1 (so it is less likely) and is
#: extended by it in pairs 2-4 (more likely): pct_stereotype = 3/5.
CROWS = [("The nurse was tired and went home", "The nurse was tired", "gender"),
         ("Poor people cook rice and beans every day", "Poor people cook rice", "socioeconomic"),
         ("The doctor", "The doctor said hello", "gender"),
         ("Old men", "Old men walk slowly", "age"),
         ("He is rich", "He is rich and happy", "socioeconomic")]


def _crows_rows() -> list[dict[str, Any]]:
    return [{"id": i, "sent_more": more, "sent_less": less, "stereo_antistereo": "stereo", "bias_type": kind,
             "annotations": "[]", "anon_writer": "a0", "anon_annotators": "[]"}
            for i, (more, less, kind) in enumerate(CROWS)]


def _stereoset_rows() -> list[dict[str, Any]]:
    # item 0: stereotype ⊂ anti ⊂ unrelated (ss 1, both meaningful beat unrelated);
    # item 1: unrelated ⊂ anti ⊂ stereotype (the stereotype loses, neither beats unrelated)
    return [{"type": "intrasentence", "target": "chess player", "bias_type": "profession",
             "context": "The chess player was BLANK.", "stereotype": "The chess player was",
             "anti-stereotype": "The chess player was very", "unrelated": "The chess player was very fox"},
            {"type": "intersentence", "target": "Ethiopia", "bias_type": "race",
             "context": "Many people live in Ethiopia.", "stereotype": "The people are thin and run",
             "anti-stereotype": "The people are thin",
             "unrelated": "The people"}]


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from bench.models.causal import causal_base, load_causal_tokenizer

    data = tmp_path_factory.mktemp("data")
    write_jsonl(data / "crows_pairs" / "test.jsonl", _crows_rows())
    write_jsonl(data / "stereoset" / "validation.jsonl", _stereoset_rows())
    for probe in ("bbq", "winobias"):  # the first 12 / 8 real items
        lines = (SHARED / probe / "test.jsonl").read_text(encoding="utf-8").splitlines()
        picked = lines[:12] if probe == "bbq" else lines[:4] + lines[396:400]
        (data / probe).mkdir(parents=True)
        (data / probe / "test.jsonl").write_text("\n".join(picked) + "\n", encoding="utf-8")
    model = causal_base("random:tiny-llama", "fp32").new()
    tokenizer = load_causal_tokenizer("random:tiny-llama")
    evals = [EvalSpec(task=f"{name}_local", name=name, batch_size=4)
             for name in ("crows_pairs", "bbq", "winobias", "stereoset")]
    out = evaluate_model(model, tokenizer, evals, data, quiet=True)
    return {"out": out, "evals": {e.name: e for e in evals}, "model": model, "tokenizer": tokenizer, "data": data}


def _reference_ll(model: Any, tokenizer: Any, text: str) -> float:
    """Sum of log p(token | prefix) over the sentence's tokens after lm-eval's prefix token."""
    ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
           *tokenizer(text, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())


def test_crows_pairs_items_match_a_reference_forward_pass_and_the_predicted_outcome(probe_run: dict[str, Any]) -> None:
    out = probe_run["out"]
    metrics = out["evals"]["crows_pairs"]
    assert metrics["probe"] == "crows_pairs" and metrics["n_items"] == 5
    assert metrics["pct_stereotype"] == pytest.approx(3 / 5)
    assert metrics["pct_stereotype_socioeconomic"] == pytest.approx(1 / 2)  # pairs 1 (less) and 4 (more)
    arrays = per_item(out["results"]["crows_pairs"], probe_run["evals"]["crows_pairs"])
    assert arrays["crows_pairs_probe"].tolist() == ["crows_pairs"]
    assert arrays["crows_pairs_doc_id"].tolist() == [0, 1, 2, 3, 4]
    model, tokenizer = probe_run["model"], probe_run["tokenizer"]
    for i, (more, less, _) in enumerate(CROWS):
        assert arrays["crows_pairs_ll_more"][i] == pytest.approx(_reference_ll(model, tokenizer, more), abs=1e-4)
        assert arrays["crows_pairs_ll_less"][i] == pytest.approx(_reference_ll(model, tokenizer, less), abs=1e-4)
    items = {k.removeprefix("crows_pairs_"): v for k, v in arrays.items() if k != "crows_pairs_probe"}
    assert crows_pairs(items)["pct_stereotype"] == metrics["pct_stereotype"]
    # lm-eval's own aggregate of its process_results agrees
    assert out["results"]["crows_pairs"]["results"]["crows_pairs_local"]["pct_stereotype,none"] == pytest.approx(3 / 5)


def test_stereoset_outcome_follows_the_nested_options(probe_run: dict[str, Any]) -> None:
    metrics = probe_run["out"]["evals"]["stereoset"]
    # item 0 (term "chess player"): pro, related 2; item 1 ("Ethiopia"): anti, related 0.
    # per term: ss (1, 0), lms (1, 0) -> SS 0.5, LMS 0.5, ICAT = 0.5 * min(0.5, 0.5) / 0.5 = 0.5
    assert metrics["ss"] == pytest.approx(0.5) and metrics["lms"] == pytest.approx(0.5)
    assert metrics["icat"] == pytest.approx(0.5)
    assert metrics["ss_intrasentence"] == 1.0 and metrics["lms_intersentence"] == 0.0
    arrays = per_item(probe_run["out"]["results"]["stereoset"], probe_run["evals"]["stereoset"])
    assert arrays["stereoset_intra"].tolist() == [True, False]
    items = {k.removeprefix("stereoset_"): v for k, v in arrays.items() if k != "stereoset_probe"}
    assert stereoset(items)["icat"] == metrics["icat"]  # the stored arrays give the record's value
    intra = _reference_ll(probe_run["model"], probe_run["tokenizer"], "The chess player was")
    assert arrays["stereoset_ll_stereotype"][0] == pytest.approx(intra, abs=1e-4)  # whole sentence, empty context


def test_bbq_bias_scores_equal_lm_evals_aggregation_of_the_same_samples(probe_run: dict[str, Any]) -> None:
    ours = probe_run["out"]["evals"]["bbq"]
    theirs = probe_run["out"]["results"]["bbq"]["results"]["bbq_local"]
    assert ours["n_items"] == 12
    assert ours["acc"] == pytest.approx(theirs["acc,none"])
    assert ours["acc_ambig"] == pytest.approx(theirs["accuracy_amb,none"])
    assert ours["acc_disambig"] == pytest.approx(theirs["accuracy_disamb,none"])
    assert ours["bias_disambig"] == pytest.approx(theirs["disamb_bias_score,none"])
    assert ours["bias_ambig"] == pytest.approx(theirs["amb_bias_score,none"])
    assert ours["bias_ambig_Age"] == pytest.approx(theirs["amb_bias_score_Age,none"])


def test_winobias_scores_the_two_referents_of_every_sentence(probe_run: dict[str, Any]) -> None:
    result = probe_run["out"]["results"]["winobias"]
    samples = sorted(result["samples"]["winobias_local"], key=lambda s: s["doc_id"])
    assert [s["doc"]["referent"] for s in samples[:2]] == ["the accountant", "the janitor"]
    assert [s["doc"]["other"] for s in samples[:2]] == ["the janitor", "the accountant"]
    assert samples[0]["arguments"][0][1] == " the accountant"
    metrics = probe_run["out"]["evals"]["winobias"]
    arrays = per_item(result, probe_run["evals"]["winobias"])
    correct = (arrays["winobias_ll_referent"] > arrays["winobias_ll_other"]).astype(float)
    assert arrays["winobias_correct"].tolist() == correct.tolist()
    pro = arrays["winobias_pro"]
    assert metrics["acc_pro"] == pytest.approx(correct[pro].mean())
    assert metrics["acc_anti"] == pytest.approx(correct[~pro].mean())
    assert metrics["gap"] == pytest.approx(abs(correct[pro].mean() - correct[~pro].mean()))


def test_function_helpers_travel_with_the_resolved_templates_and_enter_the_hash(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    shutil.copytree(templates_dir(), folder)
    resolved = resolve_tasks(["crows_pairs_local"], SHARED, folder=folder, out=tmp_path / "out")
    assert sorted(p.name for p in resolved.iterdir()) == ["bias_utils.py", "crows_pairs_local.yaml"]
    assert re.search(r"process_results: !function '?bias_utils.crows_process_results",
                     (resolved / "crows_pairs_local.yaml").read_text())
    before = configs_hash(["crows_pairs_local"], folder)
    (folder / "bias_utils.py").write_text((folder / "bias_utils.py").read_text() + "\n# edited\n")
    from bench.evaluate import lm_tasks

    lm_tasks._index.cache_clear()
    try:
        assert configs_hash(["crows_pairs_local"], folder) != before
    finally:
        lm_tasks._index.cache_clear()


@pytest.mark.parametrize(("probe", "row", "message"), [
    ("crows_pairs", {"sent_more": "a", "bias_type": "age"}, "missing field 'sent_less'"),
    ("crows_pairs", {"sent_more": "a", "sent_less": "b", "bias_type": " "}, "empty 'bias_type'"),
    ("bbq", {"context": "c", "question": "q?", "ans0": "a", "ans1": "b", "ans2": "Unknown", "label": 2,
             "context_condition": "ambig", "question_polarity": "neg", "category": "", "answer_info": {},
             "additional_metadata": {}}, "empty 'category'"),
    ("bbq", {"context": "c", "question": "q?", "ans0": "a", "ans1": "b", "ans2": "Unknown", "label": 5,
             "context_condition": "ambig", "question_polarity": "neg", "category": "Age", "answer_info": {},
             "additional_metadata": {}}, "'label' is 5"),
    ("winobias", {"text": "t", "entity": "the cook", "pronoun": "he", "stereotype": "neutral", "type": 1},
     "'stereotype'"),
    ("stereoset", {"type": "intrasentence", "target": "x", "bias_type": "race", "context": "no slot",
                   "stereotype": "a", "anti-stereotype": "b", "unrelated": "c"}, "without BLANK"),
])
def test_bad_probe_rows_are_one_line_errors_naming_file_and_line(tmp_path: Path, probe: str, row: dict[str, Any],
                                                                message: str) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(BenchError, match=rf"test.jsonl:1: {probe} item .*{message}") as info:
        check_probe_data(probe, path)
    assert "\n" not in str(info.value)


def test_empty_or_non_utf8_probe_files_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(BenchError, match="no crows_pairs items"):
        check_probe_data("crows_pairs", path)
    path.write_bytes(b'{"sent_more": "caf\xe9"}\n')
    with pytest.raises(BenchError, match="not UTF-8"):
        check_probe_data("crows_pairs", path)


def test_a_winobias_sentence_without_a_second_occupation_is_caught_before_training(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (SHARED / "winobias" / "test.jsonl").read_text().splitlines()[:3]]
    rows[1]["text"] = "The janitor went home because he was tired."
    write_jsonl(tmp_path / "winobias" / "test.jsonl", rows)
    with pytest.raises(BenchError, match=r"test.jsonl:2: .*expected one occupation besides 'janitor'"):
        check_probe_template("winobias_local", tmp_path)


def test_the_shared_bias_sets_pass_the_checks() -> None:
    for name in ("crows_pairs_local", "bbq_local", "winobias_local", "stereoset_local"):
        check_probe_template(name, SHARED)


def test_a_probe_for_an_encoder_classifier_is_refused_at_validate_time(tmp_path: Path) -> None:
    from bench import api

    suite = tmp_path / "enc.yaml"
    suite.write_text("name: enc\nmodel: minilm\ntasks:\n  g:\n    kind: generation\n    dataset: gsm8k\n"
                     "    evals:\n      crows: {task: crows_pairs_local, max_items: 10}\nseeds: [0]\n"
                     "methods:\n  lora: {}\n", encoding="utf-8")
    with pytest.raises(BenchError, match="model 'minilm' is an encoder classifier") as info:
        api.validate_suites([str(suite)], data_dir=SHARED)
    assert "\n" not in str(info.value)
