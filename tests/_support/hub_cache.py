"""A local Hugging Face hub cache that serves hub ids (``mnaylor/mega-base-wikitext``) offline.

The cache has the layout huggingface_hub reads (``models--{org}--{name}/refs/main`` holding a
commit id, ``snapshots/{commit}/`` holding the files), so ``from_pretrained("org/name")`` finds
the files with ``HF_HUB_OFFLINE=1`` and downloads nothing. The weights are tiny and random (a
``MegaForMaskedLM``, as the real checkpoint), the tokenizer is :mod:`_support.tiny_tokenizer`.
The environment variables are read when huggingface_hub is imported, so use
:func:`offline_environment` for a fresh process.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Final, Mapping

from _support.tiny_tokenizer import vocab_size, write_tiny_tokenizer

DOCUMENT_REPO_IDS: Final = ("mnaylor/mega-base-wikitext",)
"""The hub ids the model document loads."""

TINY_MEGA: Final[Mapping[str, Any]] = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "intermediate_size": 24,
    "shared_representation_size": 8,
    "ema_projection_size": 4,
    "nffn_hidden_size": 20,
    "max_positions": 64,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
"""The tiny size of every cached model (the real one is hidden 128, 4 layers, vocab 50265)."""


def snapshot_dir(cache: Path, repo_id: str) -> Path:
    """Create the refs and snapshot folders of ``repo_id`` in ``cache``; returns the snapshot folder."""
    org, name = repo_id.split("/")
    repo = cache / f"models--{org}--{name}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()  # any 40-hex id; fixed so reruns agree
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def write_tiny_mega(directory: Path, *, seed: int = 0, head: str = "MegaForMaskedLM", **overrides: Any) -> Path:
    """A random tiny MEGA (``head``: a class name of ``mega_plugin.adapters.hf``, a masked LM by
    default) with the tiny tokenizer, saved as a model directory."""
    import torch

    from mega_plugin.adapters import hf

    torch.manual_seed(seed)
    config = hf.MegaConfig(**{**TINY_MEGA, "vocab_size": vocab_size(), **overrides})
    model = getattr(hf, head)(config).eval()
    model.save_pretrained(directory)
    write_tiny_tokenizer(directory)
    return directory


def build_hub_cache(cache: Path, repo_ids: tuple[str, ...] = DOCUMENT_REPO_IDS) -> Path:
    """Fill ``cache`` with one tiny MEGA per hub id; returns ``cache``."""
    for repo_id in repo_ids:
        write_tiny_mega(snapshot_dir(cache, repo_id))
    return cache


def offline_environment(home: Path, *, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process that reads hub ids from ``home/hub`` and never downloads."""
    env = dict(os.environ if base is None else base)
    env.update(
        HF_HOME=str(home),
        HF_HUB_CACHE=str(home / "hub"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("TRANSFORMERS_CACHE", None)
    return env
