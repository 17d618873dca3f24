"""accelerate's offloading runs our models as it runs built-in ones, with the same outputs.

``cpu_offload``, ``disk_offload``, ``from_pretrained(device_map="auto", max_memory=...)`` that
forces weights to disk, and ``init_empty_weights`` + ``load_checkpoint_and_dispatch`` keep the
weights on the meta device and bring each submodule's own weights in around its call. The oracle
is the same model in memory. Before the fast CPU paths stepped aside for offloaded weights
(they read several submodules' weights past those hooks), every mode crashed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

pytestmark = pytest.mark.hf
pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

from mega_hf_helpers import right_padded_batch  # noqa: E402
from mega_plugin.adapters.hf import (  # noqa: E402
    MegaConfig,
    MegaForCausalLM,
    MegaForMaskedLM,
    MegaForSequenceClassification,
)

SMALL = dict(
    vocab_size=60, hidden_size=32, num_hidden_layers=3, intermediate_size=64, ema_projection_size=4,
    shared_representation_size=16, nffn_hidden_size=48, max_positions=64, pad_token_id=1, initializer_range=0.1,
)
CAUSAL = dict(is_decoder=True, bidirectional=False)
MODELS: dict[str, tuple[type, dict[str, Any]]] = {
    "masked-lm-chunked": (MegaForMaskedLM, dict(use_chunking=True, chunk_size=4)),
    "masked-lm": (MegaForMaskedLM, {}),
    "causal-lm-chunked": (MegaForCausalLM, dict(CAUSAL, use_chunking=True, chunk_size=4)),
    "causal-lm": (MegaForCausalLM, CAUSAL),
    "sequence-classification": (MegaForSequenceClassification, dict(num_labels=3)),
}


def offload_on_cpu(model_class: type, directory: Path) -> torch.nn.Module:
    model = model_class.from_pretrained(directory)
    return accelerate.cpu_offload(model, execution_device=torch.device("cpu"))


def offload_to_disk(model_class: type, directory: Path) -> torch.nn.Module:
    model = model_class.from_pretrained(directory)
    return accelerate.disk_offload(model, offload_dir=tempfile.mkdtemp(dir=directory), execution_device=torch.device("cpu"))


def device_map_to_disk(model_class: type, directory: Path) -> torch.nn.Module:
    model = model_class.from_pretrained(
        directory, device_map="auto", max_memory={"cpu": "60KB"}, offload_folder=str(directory / "offload")
    )
    assert "disk" in set(model.hf_device_map.values()), model.hf_device_map
    return model


def empty_then_dispatched(model_class: type, directory: Path) -> torch.nn.Module:
    with accelerate.init_empty_weights():
        model = model_class(MegaConfig.from_pretrained(directory))
    model.tie_weights()
    return accelerate.load_checkpoint_and_dispatch(
        model, str(directory), device_map="auto", max_memory={"cpu": "60KB"}, offload_folder=str(directory / "offload")
    )


MODES: dict[str, Callable[[type, Path], torch.nn.Module]] = {
    "cpu_offload": offload_on_cpu,
    "disk_offload": offload_to_disk,
    "device_map": device_map_to_disk,
    "dispatch": empty_then_dispatched,
}


def saved(name: str, directory: Path) -> tuple[type, torch.nn.Module]:
    model_class, extra = MODELS[name]
    torch.manual_seed(0)
    model = model_class(MegaConfig(**SMALL, **extra)).eval()
    model.save_pretrained(directory)
    return model_class, model


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(MODELS))
def test_offloaded_models_give_the_in_memory_logits(name: str, mode: str, tmp_path: Path) -> None:
    model_class, in_memory = saved(name, tmp_path)
    offloaded = MODES[mode](model_class, tmp_path).eval()
    assert any(p.is_meta for p in offloaded.parameters()), "nothing was offloaded: the test would prove nothing"
    batch = right_padded_batch(length=10, real=7, seed=1)
    with torch.no_grad():
        expected = in_memory(**batch).logits
        torch.testing.assert_close(offloaded(**batch).logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["causal-lm-chunked", "causal-lm"])
def test_generate_under_offload_equals_in_memory(name: str, tmp_path: Path) -> None:
    model_class, in_memory = saved(name, tmp_path)
    offloaded = offload_to_disk(model_class, tmp_path).eval()
    prompt = right_padded_batch(length=10, real=7, seed=1)["input_ids"][:1, :5]
    settings = dict(max_new_tokens=9, min_new_tokens=9, do_sample=False, pad_token_id=1)
    expected = in_memory.generate(prompt, **settings)
    torch.testing.assert_close(offloaded.generate(prompt, **settings), expected, rtol=0, atol=0)
