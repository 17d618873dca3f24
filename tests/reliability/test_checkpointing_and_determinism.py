"""Activation checkpointing (same gradients, HF Trainer runs with it) and seeded determinism."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.hf
transformers = pytest.importorskip("transformers")

from _support.configs import CAUSAL, TINY  # noqa: E402

from mega_plugin.adapters.hf import (  # noqa: E402
    MegaConfig,
    MegaForCausalLM,
    MegaForMaskedLM,
    MegaForSequenceClassification,
)


def _batch(seed: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, TINY["vocab_size"], (3, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids}


def _gradients(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(**batch).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "kwargs", [None, {"use_reentrant": False}, {"use_reentrant": True}], ids=["default", "non-reentrant", "reentrant"]
)
@pytest.mark.parametrize("model_class, extra", [(MegaForMaskedLM, {}), (MegaForCausalLM, CAUSAL)], ids=["mlm", "causal"])
def test_gradient_checkpointing_gives_the_same_gradients(
    model_class: type, extra: dict[str, Any], kwargs: dict[str, bool] | None
) -> None:
    from transformers.modeling_layers import GradientCheckpointingLayer

    # Dropout on: checkpointing must replay the same dropout masks (RNG state is restored).
    model = model_class(MegaConfig(**{**TINY, **extra, "use_chunking": True, "chunk_size": 4})).train()
    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert len(blocks) == TINY["num_hidden_layers"]
    batch = _batch()
    torch.manual_seed(7)
    plain = _gradients(model, batch)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    assert model.is_gradient_checkpointing
    calls: list[str] = []
    for index, block in enumerate(blocks):
        function = block._gradient_checkpointing_func
        if kwargs is not None:  # transformers' kwargs reach torch.utils.checkpoint
            assert function.keywords["use_reentrant"] is kwargs["use_reentrant"]
        block._gradient_checkpointing_func = lambda *args, _f=function, _i=index: calls.append(_i) or _f(*args)
    torch.manual_seed(7)
    checkpointed = _gradients(model, batch)
    assert calls == list(range(len(blocks)))  # every block went through the checkpoint function once
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    calls.clear()
    _gradients(model, batch)
    assert not calls


class _TinyDataset(torch.utils.data.Dataset):
    def __init__(self, *, classification: bool) -> None:
        generator = torch.Generator().manual_seed(5)
        self.ids = torch.randint(2, TINY["vocab_size"], (8, 10), generator=generator)
        self.labels = torch.randint(0, 2, (8,), generator=generator) if classification else self.ids
        
    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "attention_mask": torch.ones_like(self.ids[index]), "labels": self.labels[index]}


@pytest.mark.parametrize("model_class", [MegaForMaskedLM, MegaForSequenceClassification], ids=["mlm", "seqcls"])
def test_trainer_runs_with_gradient_checkpointing(model_class: type, tmp_path: Path) -> None:
    model = model_class(MegaConfig(**TINY, num_labels=2))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        gradient_checkpointing=True,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=_TinyDataset(classification=model_class is MegaForSequenceClassification))
    result = trainer.train()
    assert model.is_gradient_checkpointing
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    changed = [name for name, p in model.named_parameters() if not torch.equal(p.detach().cpu(), before[name])]
    assert "mega.layers.0.mega_layer.v_proj.weight" in changed


def _train_once(seed: int) -> tuple[list[float], torch.Tensor]:
    torch.manual_seed(seed)
    model = MegaForCausalLM(MegaConfig(**{**TINY, **CAUSAL})).train()  # dropout on
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(3):
        loss = model(**_batch(seed=step)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    model.eval()
    with torch.no_grad():
        logits = model(**_batch(seed=9)).logits
    return losses, logits


def test_seeded_runs_are_identical() -> None:
    losses_a, logits_a = _train_once(11)
    losses_b, logits_b = _train_once(11)
    assert losses_a == losses_b
    assert torch.equal(logits_a, logits_b)
    losses_c, _ = _train_once(12)
    assert losses_c != losses_a  # the seed matters: the comparison above is not vacuous


def test_every_n_layers_checkpoints_every_nth_block() -> None:
    model = MegaForCausalLM(MegaConfig(**{**TINY, **CAUSAL, "num_hidden_layers": 4}))
    if not hasattr(model, "activation_checkpointing_enable"):
        pytest.skip("every_n_layers arrived with transformers 5's activation_checkpointing_enable")
    model.activation_checkpointing_enable(every_n_layers=2)
    assert [block.gradient_checkpointing for block in model.mega.layers] == [True, False, True, False]
