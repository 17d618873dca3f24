"""Gradient accumulation in HF ``Trainer`` makes the same update as one large batch (4.57 and 5.x).

The ``Trainer`` passes ``num_items_in_batch`` (the labelled tokens of the whole accumulated
batch) to models that take ``**kwargs`` and then leaves the scaling to them. Rows here have
different numbers of labelled tokens, so a per-micro-batch mean would also be wrong, not only
k times too large. Plain SGD keeps the update proportional to the gradient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
from mega_hf_helpers import NO_DROPOUT, TINY  # noqa: E402

ROWS = 8
LENGTH = 12


def dataset(task: str = "tokens") -> list[dict[str, torch.Tensor]]:
    """``tokens``: the ids as labels (LM); ``token-classes``: id mod 3; ``sequence``: first id mod 2."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for row in range(ROWS):
        ids = torch.randint(3, TINY["vocab_size"], (LENGTH,), generator=generator)
        labels = ids % 3 if task == "token-classes" else ids.clone()
        labels[2 + row :] = -100  # 2 .. 9 labelled tokens: micro-batches differ in size
        if task == "sequence":
            labels = ids[0] % 2
        rows.append({"input_ids": ids, "attention_mask": torch.ones(LENGTH, dtype=torch.long), "labels": labels})
    return rows


def one_update(
    auto_name: str, output_dir: Path, *, accumulation: int, task: str, **config: Any
) -> dict[str, torch.Tensor]:
    """The parameter change of one optimizer step over all rows, in ``accumulation`` micro-batches."""
    torch.manual_seed(0)
    values = dict(TINY, **NO_DROPOUT, **config)
    model = getattr(transformers, auto_name).from_config(transformers.AutoConfig.for_model("mega", **values))
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    arguments = transformers.TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=ROWS // accumulation,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        max_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    transformers.Trainer(model=model, args=arguments, train_dataset=dataset(task)).train()
    return {name: parameter.detach() - before[name] for name, parameter in model.named_parameters()}


@pytest.mark.parametrize(
    ("auto_name", "task", "config"),
    [
        ("AutoModelForCausalLM", "tokens", {"is_decoder": True, "bidirectional": False, "use_chunking": True, "chunk_size": 4}),
        (
            "AutoModelForCausalLM",
            "tokens",
            {"is_decoder": True, "bidirectional": False, "use_chunking": True, "chunk_size": 4, "add_final_norm": True,
             "adaptive_input_cutoffs": [10, 30], "adaptive_softmax_cutoffs": [10, 30], "adaptive_input_factor": 2,
             "adaptive_softmax_factor": 2, "tie_adaptive_weights": True, "tie_adaptive_proj": True,
             "tie_word_embeddings": False},
        ),
        ("AutoModelForMaskedLM", "tokens", {}),
        ("AutoModelForTokenClassification", "token-classes", {"num_labels": 3}),
        ("AutoModelForSequenceClassification", "sequence", {"num_labels": 2}),
    ],
    ids=["causal-lm", "causal-lm-adaptive-softmax", "masked-lm", "token-classification", "sequence-classification"],
)
def test_accumulated_updates_equal_one_batch(auto_name: str, task: str, config: dict[str, Any], tmp_path: Path) -> None:
    whole = one_update(auto_name, tmp_path / "1", accumulation=1, task=task, **config)
    assert sum(delta.abs().sum() for delta in whole.values()) > 0
    for accumulation in (2, 4):
        split = one_update(auto_name, tmp_path / str(accumulation), accumulation=accumulation, task=task, **config)
        whole_norm = torch.sqrt(sum(delta.pow(2).sum() for delta in whole.values()))
        split_norm = torch.sqrt(sum(delta.pow(2).sum() for delta in split.values()))
        assert split_norm / whole_norm == pytest.approx(1.0, abs=1e-4), accumulation
        for name, delta in whole.items():
            torch.testing.assert_close(split[name], delta, rtol=1e-4, atol=1e-6, msg=f"{name}, accumulation {accumulation}")


def test_shift_labels_give_the_loss_of_the_labels_they_come_from() -> None:
    """transformers may pass labels already shifted (``shift_labels``, aligned with the logits)."""
    torch.manual_seed(0)
    values = dict(TINY, **NO_DROPOUT, is_decoder=True, bidirectional=False)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model("mega", **values))
    rows = dataset()
    ids = torch.stack([row["input_ids"] for row in rows])
    labels = torch.stack([row["labels"] for row in rows])
    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    with torch.no_grad():
        from_labels = model(ids, labels=labels).loss
        from_shifted = model(ids, shift_labels=shifted).loss
        summed = model(ids, labels=labels, num_items_in_batch=int((labels[:, 1:] != -100).sum())).loss
    torch.testing.assert_close(from_shifted, from_labels)
    torch.testing.assert_close(summed, from_labels)
