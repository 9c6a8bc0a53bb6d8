"""The reload check's base model (BaseModel.shell): the pretrained body, no weights drawn."""

from __future__ import annotations

import torch

from bench.models.encoder import base_model
from bench.sdk.loop import wrap_lora
from tests.helpers import N_CLASSES, TINY


def test_shell_of_a_pretrained_encoder_has_its_body_and_an_undrawn_head() -> None:
    base = base_model("minilm", 3)
    fresh, shell = base.new(0), base.shell(0)
    body = {k: v for k, v in fresh.state_dict().items() if not k.startswith("classifier.")}
    for key, value in body.items():
        assert torch.equal(shell.state_dict()[key], value), key
    # the head is not drawn: not the seed's head (torch.empty's contents, whatever they are)
    assert not torch.equal(shell.classifier.weight, fresh.classifier.weight)


def test_a_saved_lora_reloads_onto_the_shell_exactly(tmp_path) -> None:
    from peft import PeftModel

    base = base_model("minilm", 3)
    model = wrap_lora(base.new(0), head=["pooler", "classifier"], r=4, alpha=8, dropout=0.0, target_modules=None)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.01 * torch.randn_like(param))  # as if trained
    model.save_pretrained(str(tmp_path))
    again = PeftModel.from_pretrained(base.shell(0), str(tmp_path)).eval()
    ids = torch.tensor([[101, 2054, 2003, 1037, 3231, 102]])
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        assert torch.equal(model.eval()(**x).logits, again(**x).logits)


def test_random_presets_fall_back_to_the_seeded_model() -> None:
    # a random: preset has no pretrained body: the shell would be garbage, so it is new(seed)
    base = base_model(TINY, N_CLASSES)
    shell, fresh = base.shell(5), base.new(5)
    for (key, a), (_, b) in zip(shell.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), key
