"""HF ``Trainer`` fine-tunes MEGA classification heads (4.57 and 5.x): the loss falls, and
``save_model`` + ``from_pretrained`` round-trips the trained weights.

The synthetic tasks are learnable from the tokens alone: a sequence's label is the parity of its
first token (what the first-token classification head reads); a token's label is its id mod 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
from mega_hf_helpers import NO_DROPOUT, TINY  # noqa: E402

LENGTH = 12
EXAMPLES = 64


def dataset(task: str, seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(EXAMPLES):
        ids = torch.randint(3, TINY["vocab_size"], (LENGTH,), generator=generator)
        labels = (ids[0] % 2) if task == "sequence" else ids % 3
        rows.append({"input_ids": ids, "attention_mask": torch.ones(LENGTH, dtype=torch.long), "labels": labels})
    return rows


def train(auto_name: str, task: str, output_dir: Path, **config: Any) -> tuple[Any, list[float]]:
    values = dict(TINY, **NO_DROPOUT, **config)
    model = getattr(transformers, auto_name).from_config(transformers.AutoConfig.for_model("mega", **values))
    arguments = transformers.TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=16,
        learning_rate=5e-3,
        max_steps=40,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=dataset(task, seed=0))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    trainer.save_model(str(output_dir / "final"))
    return trainer.model, losses


@pytest.mark.parametrize(
    ("auto_name", "task", "config"),
    [
        ("AutoModelForSequenceClassification", "sequence", {"num_labels": 2}),
        ("AutoModelForTokenClassification", "token", {"num_labels": 3}),
    ],
    ids=["sequence-classification", "token-classification"],
)
def test_trainer_fine_tunes_and_round_trips(auto_name: str, task: str, config: dict[str, Any], tmp_path: Path) -> None:
    model, losses = train(auto_name, task, tmp_path, **config)
    assert len(losses) >= 6, losses
    assert sum(losses[-2:]) / 2 < 0.6 * losses[0], losses
    reloaded = getattr(transformers, auto_name).from_pretrained(tmp_path / "final").eval()
    batch = dataset(task, seed=1)[:8]
    inputs = {key: torch.stack([row[key] for row in batch]) for key in ("input_ids", "attention_mask")}
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
        actual = reloaded(**inputs).logits
    assert torch.equal(actual, expected)
