"""One setup: parse its args with the ORIGINAL ``add_args``, build, randomise, save, run references."""

from __future__ import annotations

import argparse
import copy
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

import standins
from checkpoints import LAYOUTS, VARIANT_DTYPES, write_checkpoints
from references import compute_references
from setups import Setup


def original_args(setup: Setup) -> argparse.Namespace:
    """The setup's argparse.Namespace as fairseq 0.9 builds it: add_args (defaults suppressed), then the arch."""
    __import__({"mega_lm": "fairseq.models.mega_lm", "mega": "fairseq.models.mega", "lra": "fairseq.models.lra.model",
                "sc_raw": "fairseq.models.speech_commands.model"}[setup.model])
    model_cls = standins.MODELS[setup.model]
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS, allow_abbrev=False)
    model_cls.add_args(parser)
    args, unknown = parser.parse_known_args(setup.argv)
    if unknown:
        raise SystemExit(f"{setup.name}: the original add_args does not know {unknown}")
    for key, value in setup.extra.items():
        setattr(args, key, value)
    args.arch = setup.arch
    model_name, arch_fn = standins.ARCHITECTURES[setup.arch]
    assert model_name == setup.model, (model_name, setup.model)
    arch_fn(args)
    return args


def build_model(setup: Setup, args: argparse.Namespace) -> nn.Module:
    """A fresh original model (``build_model`` of the registered class) from a copy of ``args``."""
    task = standins.Task(standins.Dictionary(setup.vocab) if setup.vocab else None)
    model = standins.MODELS[setup.model].build_model(copy.deepcopy(args), task)
    return model.eval()


def randomise(model: nn.Module, *, seed: int) -> None:
    """Give every tensor values that matter: the original inits many projections with std 0.02 and
    norms with ones, which would let a wrong conversion of them hide below the tolerance.

    Matrices (and the EMA's 3-D tensors) are redrawn with std 1/sqrt(last dim); the simple
    relative-position biases with std 0.5; other vectors get noise around their init (norm
    weights 1 + N(0, 0.1^2), zero biases N(0, 0.1^2)); batchnorm statistics are set.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():  # shared (tied) tensors appear once
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("rel_pos_bias.rel_pos_bias"):
                param.copy_(0.5 * noise)
            elif param.dim() >= 2:
                param.copy_(noise * param.shape[-1] ** -0.5)
            else:
                scale = param.detach().float().std().item() if param.numel() > 1 else 0.0
                param.add_(noise * (0.3 * scale if scale > 1e-6 else 0.1))
        for name, buffer in model.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_mean":
                buffer.copy_(0.2 * torch.randn(buffer.shape, generator=generator))
            elif leaf == "running_var":
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
            elif leaf == "_float_tensor":
                buffer.zero_()  # uninitialised memory in the original: make the file deterministic


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def build_setup(setup: Setup, directory: Path, *, commit: str) -> dict[str, Any]:
    """Write the setup's checkpoints and references into ``directory``; return its manifest."""
    args = original_args(setup)
    seed = zlib.crc32(setup.name.encode())  # one seed per setup: no two setups share numbers
    torch.manual_seed(seed)
    model = build_model(setup, args)
    randomise(model, seed=seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    files: dict[str, dict[str, str]] = {}
    references: dict[str, dict[str, Any]] = {}
    checks: dict[str, float] = {}
    inputs = None
    for variant, dtype in VARIANT_DTYPES.items():
        stored = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
        files[variant] = write_checkpoints(directory, variant, stored, args, layouts=LAYOUTS if variant == "fp32" else ("save_state",))
        # a FRESH original model per variant: the EMA caches its kernel, never reuse one after changing weights
        fresh = build_model(setup, args)
        fresh.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in stored.items()})
        fresh.eval()
        tensors, meaning, inputs, variant_checks = compute_references(setup, fresh, inputs=inputs)
        path = directory / f"reference_{variant}.pt"
        torch.save(tensors, path)
        references[variant] = {"file": path.name, "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch."), "meaning": meaning[k]} for k, v in tensors.items()}}
        checks.update({f"{variant}/{k}": v for k, v in variant_checks.items()})
    return {
        "setup": setup.name,
        "kind": setup.kind,
        "original": {"repository": "facebookresearch/mega", "commit": commit, "model": setup.model, "arch": setup.arch,
                     "readme": setup.readme, "argv": setup.argv},
        "args": {k: _plain(v) for k, v in sorted(vars(args).items())},
        "vocab_size": setup.vocab,
        "files": files,
        "references": references,
        "tolerances": {"fp32": {"atol": 1e-5, "rtol": 1e-5}, "fp16": {"atol": 1e-5, "rtol": 1e-5},
                       "bf16": {"atol": 1e-5, "rtol": 1e-5},
                       "note": "every reference is the original model run in float32; fp16/bf16 references come from "
                               "a fresh original model that loaded the low-precision weights (widened to float32)"},
        "generator_checks": checks,
    }
