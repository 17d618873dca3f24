"""fairseq checkpoint layouts: 0.9 ``save_state`` (``args`` Namespace), later ``cfg``, legacy torch.save."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

VARIANT_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS: tuple[str, ...] = ("save_state", "cfg", "legacy")


def _bookkeeping(args: argparse.Namespace) -> dict[str, Any]:
    # what fairseq's save_state puts around the weights; numpy scalars as real checkpoints hold them
    return {
        "optimizer_history": [{
            "criterion_name": "CrossEntropyCriterion",
            "optimizer_name": "FairseqAdam",
            "lr_scheduler_state": {"best": np.float64(3.25)},
            "num_updates": 1000,
        }],
        "extra_state": {
            "train_iterator": {"epoch": 2, "iterations_in_epoch": 0, "shuffle": True},
            "val_loss": np.float64(3.25),
            "best": np.float32(3.25),
        },
        "last_optimizer_state": {"state": {}, "param_groups": [{"lr": 0.001, "betas": (0.9, 0.98), "eps": 1e-8,
                                                                 "weight_decay": 0.01, "params": []}]},
    }


def checkpoint_dict(layout: str, state: dict[str, torch.Tensor], args: argparse.Namespace) -> dict[str, Any]:
    """The checkpoint dict of ``layout`` (``legacy`` uses the save_state dict)."""
    if layout in ("save_state", "legacy"):
        return {"args": copy.deepcopy(args), "model": state, **_bookkeeping(args)}
    if layout == "cfg":
        # fairseq >= 0.10: args None, cfg sections; a model built from legacy args keeps them as a Namespace
        common = {"fp16": False, "seed": 1}
        task = {"_name": getattr(args, "task", None)}
        return {"args": None, "cfg": {"_name": None, "common": common, "model": copy.deepcopy(args), "task": task,
                                      "criterion": {"_name": getattr(args, "criterion", None)}},
                "model": state, **_bookkeeping(args)}
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def write_checkpoints(directory: Path, variant: str, state: dict[str, torch.Tensor], args: argparse.Namespace,
                      *, layouts: tuple[str, ...]) -> dict[str, str]:
    """Write ``checkpoint_{variant}_{layout}.pt`` for each layout; {layout: file name}."""
    files = {}
    for layout in layouts:
        name = f"checkpoint_{variant}_{layout}.pt"
        kwargs = {"_use_new_zipfile_serialization": False} if layout == "legacy" else {}
        torch.save(checkpoint_dict(layout, state, args), directory / name, **kwargs)
        files[layout] = name
    return files
