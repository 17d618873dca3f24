"""Fixtures made by the ORIGINAL facebookresearch/mega code, kept as data in tests/fixtures/original_mega.

One tiny randomised model per README setup (``setup_names()``): language models
``lm_wt103`` (adaptive input + adaptive softmax, pre-norm + parameter-free final norm) and
``lm_enwik8`` (shared input/output embedding), LRA classifiers ``lra_listops``, ``lra_text``,
``lra_retrieval`` (two inputs), ``lra_image``, ``lra_pathfinder``, ``lra_pathx`` (real-valued
pixel inputs, batchnorm / syncbatchnorm), the translation model ``mt_wmt16`` and the raw
speech classifier ``sc_raw``. Built by ``scripts/original_mega/build_fixtures.py`` (see
docs/original_checkpoints.md); nothing of the original code is in this repository.

Usage in a test::

    from _support.original_fixtures import load_fixture, setup_names

    fixture = load_fixture("lm_enwik8")
    fixture.args["decoder_chunk_size"]              # the original argparse args, as a dict
    path = fixture.checkpoint_path(variant="fp16")  # fairseq 0.9 save_state layout, fp16 weights
    path = fixture.checkpoint_path(layout="cfg")    # fp32 only: "save_state", "cfg", "legacy"
    ref = fixture.reference(variant="fp16")         # {name: tensor}, the original's float32 outputs
    ref["input.tokens"], ref["log_probs"]
    fixture.manifest["references"]["fp32"]["tensors"]["log_probs"]["meaning"]
    fixture.tolerance("fp32")                       # {"atol": 1e-5, "rtol": 1e-5}

Checkpoints (``.checkpoint_path``):

* ``save_state``: fairseq 0.9's dict: ``args`` (argparse.Namespace), ``model``,
  ``optimizer_history``, ``extra_state`` (holds numpy scalars, as real checkpoints do),
  ``last_optimizer_state``. Every variant (``fp32``, ``fp16``, ``bf16``) has one.
* ``cfg``: the later layout: ``args`` None, ``cfg`` a dict whose ``model`` is the Namespace (fp32).
* ``legacy``: the save_state dict written with ``_use_new_zipfile_serialization=False`` (fp32).

Loading them needs ``weights_only=False`` or safe globals for ``argparse.Namespace`` and the
numpy scalar types (see :func:`load_checkpoint`).

References (``.reference(variant=...)``): keys ``input.*`` are the inputs; the rest are the
original's outputs (float32; fp16/bf16 ones come from a fresh original model that loaded the
low-precision weights), described with shapes in ``manifest["references"][variant]["tensors"]``:

* LM: ``input.tokens`` (2, 10; chunk 4) -> ``features`` (after the final norm), ``log_probs``
  (through the adaptive softmax for wt103), ``incremental_log_probs`` (one token at a time);
* LRA / SC: ``input.src_tokens`` (right-padded ids, or normalized real values) and
  ``input.src_lengths`` (and ``input.src_tokens1``/``input.src_lengths1`` for retrieval)
  -> ``logits``, ``pooled`` (``pooled1``), ``hidden`` (last states, final norm, pads zeroed);
* MT: ``input.src_tokens`` (LEFT-padded), ``input.src_lengths``, ``input.prev_output_tokens``
  -> ``encoder_out``, ``encoder_padding_mask``, ``decoder_features``, ``log_probs``,
  ``incremental_log_probs``, ``greedy_tokens``, ``greedy_scores``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

FIXTURE_ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "original_mega"
LAYOUTS: tuple[str, ...] = ("save_state", "cfg", "legacy")
VARIANTS: tuple[str, ...] = ("fp32", "fp16", "bf16")


def setup_names() -> tuple[str, ...]:
    """Every setup with a fixture directory (sorted)."""
    return tuple(sorted(p.name for p in FIXTURE_ROOT.iterdir() if (p / "manifest.json").is_file()))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A fixture checkpoint, loaded with weights_only=True and exactly the globals fairseq files need."""
    import numpy as np
    import torch

    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
    allowed: list[Any] = [argparse.Namespace, np.dtype, core.multiarray.scalar]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64")]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class OriginalFixture:
    """One setup's directory: its manifest, args, checkpoints and references."""

    name: str
    directory: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def args(self) -> dict[str, Any]:
        """The original argparse args (JSON-able values; the checkpoints hold the real Namespace)."""
        return dict(self.manifest["args"])

    @property
    def kind(self) -> str:
        """'lm', 'lra_text', 'lra_retrieval', 'lra_image', 'sc' or 'mt'."""
        return self.manifest["kind"]

    def variants(self) -> tuple[str, ...]:
        """The stored weight dtypes: ("fp32", "fp16", "bf16")."""
        return tuple(v for v in VARIANTS if v in self.manifest["files"])

    def layouts(self, *, variant: str = "fp32") -> tuple[str, ...]:
        """The checkpoint layouts stored for ``variant``."""
        return tuple(layout for layout in LAYOUTS if layout in self._files(variant))

    def _files(self, variant: str) -> dict[str, str]:
        if variant not in self.manifest["files"]:
            raise ValueError(f"{self.name}: variant must be one of {self.variants()}, got {variant!r}")
        return self.manifest["files"][variant]

    def checkpoint_path(self, *, variant: str = "fp32", layout: str = "save_state") -> Path:
        """The checkpoint file of ``variant`` in ``layout`` (only fp32 has every layout)."""
        files = self._files(variant)
        if layout not in files:
            raise ValueError(f"{self.name}: variant {variant!r} has layouts {tuple(files)}, not {layout!r}")
        return self.directory / files[layout]

    def reference(self, *, variant: str = "fp32") -> dict[str, Any]:
        """{name: tensor}: the inputs (``input.*``) and the original's float32 outputs for ``variant``'s weights."""
        import torch

        self._files(variant)
        path = self.directory / self.manifest["references"][variant]["file"]
        return torch.load(path, map_location="cpu", weights_only=True)

    def tolerance(self, variant: str = "fp32") -> dict[str, float]:
        """{"atol", "rtol"} for comparing a converted model's outputs with ``reference(variant=...)``."""
        return dict(self.manifest["tolerances"][variant])


@lru_cache(maxsize=None)
def load_fixture(name: str) -> OriginalFixture:
    """The fixture of setup ``name`` (one of :func:`setup_names`)."""
    directory = FIXTURE_ROOT / name
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"no original-MEGA fixture {name!r}; have {setup_names()}")
    return OriginalFixture(name, directory, json.loads(manifest_path.read_text(encoding="utf-8")))
