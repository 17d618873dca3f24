"""PEFT LoRA on our projections behaves as on built-in models.

The oracles are PEFT's own arithmetic: a LoRA adapter with non-zero B changes the output by
exactly what ``merge_and_unload()`` folds into the weights (so every fast path must have called
the wrapped projections as modules), training moves only the adapter's parameters, and a saved
adapter loads back to the same outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.hf
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from mega_hf_helpers import right_padded_batch  # noqa: E402
from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM, MegaForSequenceClassification  # noqa: E402

TARGETS = ["v_proj", "mx_proj", "h_proj", "fc1", "fc2"]
SMALL = dict(
    vocab_size=60, hidden_size=32, num_hidden_layers=2, intermediate_size=64, ema_projection_size=4,
    shared_representation_size=16, nffn_hidden_size=48, max_positions=64, pad_token_id=1, initializer_range=0.1,
)
CASES: dict[str, tuple[type, dict[str, Any], str]] = {
    "causal-lm-chunked": (MegaForCausalLM, dict(is_decoder=True, bidirectional=False, use_chunking=True, chunk_size=4), "CAUSAL_LM"),
    "classification": (MegaForSequenceClassification, dict(num_labels=3), "SEQ_CLS"),
}


def lora_model(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    model_class, extra, task = CASES[name]
    torch.manual_seed(0)
    base = model_class(MegaConfig(**SMALL, **extra)).eval()
    config = peft.LoraConfig(task_type=task, r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
    return base, peft.get_peft_model(base, config).eval()


@pytest.mark.parametrize("name", list(CASES))
def test_the_adapter_changes_the_output_by_what_merging_folds_in(name: str) -> None:
    base, model = lora_model(name)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, peft.tuners.lora.Linear)]
    assert len(wrapped) == len(TARGETS) * SMALL["num_hidden_layers"], wrapped
    inputs = right_padded_batch(length=9, real=6, seed=2)
    with torch.no_grad():
        adapted = model(**inputs).logits
        with model.disable_adapter():
            plain = model(**inputs).logits
        assert (adapted - plain).abs().max() > 1e-3  # the adapter was really applied
        merged = model.merge_and_unload()(**inputs).logits
    torch.testing.assert_close(adapted, merged, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_training_moves_only_the_adapter_and_it_round_trips(name: str, tmp_path: Path) -> None:
    _, model = lora_model(name)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n or "score" in n for n in trainable), trainable
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs = right_padded_batch(length=9, real=6, seed=2)
    labels = inputs["input_ids"] if name.startswith("causal") else torch.tensor([0, 2])
    losses = []
    for _ in range(4):
        loss = model(**inputs, labels=labels).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0], losses
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == (n not in trainable), n
    model.eval()
    model.save_pretrained(tmp_path)
    base_class, extra, _ = CASES[name]
    torch.manual_seed(0)
    fresh = base_class(MegaConfig(**SMALL, **extra)).eval()
    loaded = peft.PeftModel.from_pretrained(fresh, tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, atol=1e-6, rtol=1e-6)
