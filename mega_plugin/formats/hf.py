"""The Hugging Face MEGA layout, written without importing transformers.

``config.json`` holds every ``MegaConfig`` field (the core fields plus the HF-only ones) and
``model_type = "mega"``; weights go to ``model.safetensors`` (``safetensors`` installed) or
``pytorch_model.bin``. Converters build their config with :func:`hf_config_dict`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Final, Mapping, Sequence

import torch

from ..core.config import MegaCoreConfig

HF_PREFIX: Final = "mega."
"""Prefix of the backbone keys in every HF MEGA head model (``base_model_prefix``)."""

HF_WORD_EMBEDDINGS: Final = f"{HF_PREFIX}embedding_layer.word_embeddings.weight"
"""The token embedding in an HF MEGA checkpoint (the LM heads tie their weight to it)."""

EXCLUDED_CORE_FIELDS: Final = ("extra", "ema_kernel", "attention_kernel", "norm_eps")
"""Core fields that are not written to config.json (ours, or fixed in the reference)."""

WRITTEN_ONLY_WHEN_SET: Final[Mapping[str, Any]] = {
    "scale_embeddings": False,
    "cross_attention_max_positions": None,
    "add_final_norm": False,
    "final_norm_affine": True,
    "input_type": "tokens",
    "embedding_dropout_prob": 0.0,
    "normalize_embeddings": False,
    "classifier_style": "hf",
    "classifier_pooling": "first",
    "classifier_layers": 1,
    "classifier_hidden_size": None,
    "classifier_activation": "gelu",
    "classifier_dual_input": False,
    "adaptive_input_cutoffs": None,
    "adaptive_input_factor": 4.0,
    "adaptive_softmax_cutoffs": None,
    "adaptive_softmax_factor": 4.0,
    "adaptive_softmax_dropout_prob": 0.0,
    "tie_adaptive_weights": False,
    "tie_adaptive_proj": False,
}
"""Our core fields the reference ``MegaConfig`` lacks: left out of config.json at these values, so a
directory of a model that does not use them stays the reference's layout."""

HF_ONLY_DEFAULTS: Final[Mapping[str, Any]] = {
    "bos_token_id": 0,
    "eos_token_id": 2,
    "classifier_dropout": None,
    "use_cache": True,
    "add_lm_hidden_dense_layer": True,
    "tie_word_embeddings": True,
}
"""``MegaConfig`` fields the core config does not have, with the reference defaults."""

ARCHITECTURE_CAUSAL_LM: Final = "MegaForCausalLM"
ARCHITECTURE_MASKED_LM: Final = "MegaForMaskedLM"
ARCHITECTURE_BASE: Final = "MegaModel"

ProgressFn = Callable[[int, int, str], None]


def hf_config_dict(core: MegaCoreConfig, *, architectures: Sequence[str], **hf_fields: Any) -> dict[str, Any]:
    """The config.json dict for ``core``: core fields, HF-only fields, ``model_type`` and ``architectures``.

    Keys in ``core.extra`` (e.g. ``bos_token_id``) and then ``hf_fields`` override the defaults.
    """
    values = {k: v for k, v in dataclasses.asdict(core).items() if k not in EXCLUDED_CORE_FIELDS}
    for name, unset in WRITTEN_ONLY_WHEN_SET.items():
        if values.get(name) == unset:
            del values[name]
    values.update(HF_ONLY_DEFAULTS)
    values.update(core.extra)
    values.update(hf_fields)
    values["model_type"] = "mega"
    values["architectures"] = list(architectures)
    return values


def _independent(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory or are not contiguous.
    seen: set[tuple[int, int]] = set()
    result = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.numel() > 0:
            storage = tensor.untyped_storage()
            span = (storage.data_ptr(), storage.nbytes())
            if span in seen or storage.nbytes() != tensor.numel() * tensor.element_size():
                tensor = tensor.clone()  # shared with another key, or a view into a larger buffer
            seen.add((tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()))
        result[key] = tensor
    return result


def save_hf_directory(
    out_dir: str | Path,
    config: Mapping[str, Any],
    state_dict: Mapping[str, Any],
    *,
    progress: ProgressFn | None = None,
    safe_serialization: bool = True,
) -> list[Path]:
    """Write ``config.json`` and the weights into ``out_dir``; returns the files written.

    Uses ``safetensors`` when installed and ``safe_serialization`` is on, else ``torch.save``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"state dict values must be tensors; not tensors: {', '.join(sorted(bad))}")
    tensors: dict[str, torch.Tensor] = {}
    items = list(state_dict.items())
    for index, (key, tensor) in enumerate(items, start=1):
        tensors[key] = tensor
        if progress is not None:
            progress(index, len(items), key)
    tensors = _independent(tensors)
    config_path = out / "config.json"
    config_path.write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    try:
        from safetensors.torch import save_file
    except ImportError:
        save_file = None
    if safe_serialization and save_file is not None:
        weights_path = out / "model.safetensors"
        save_file(tensors, str(weights_path), metadata={"format": "pt"})
    else:
        weights_path = out / "pytorch_model.bin"
        torch.save(tensors, weights_path)
    return [config_path, weights_path]
