"""fairseq2 data parallelism (gangs, DDP, FSDP) on a tiny MEGA LM: the ``torchrun`` worker and the shared recipe.

``test_fs2_distributed.py`` launches this file with ``python -m torch.distributed.run
--nproc-per-node 2`` (CPU, gloo). Each rank sets up its gangs the way fairseq2's recipes do
(``ProcessGroupGang.create_default_process_group`` -> ``create_parallel_gangs``, plus
``create_fsdp_gangs`` for FSDP), builds the ``mega`` model through the fairseq2 model hub, wraps
it with fairseq2's ``to_ddp`` or ``to_fsdp`` (FSDP through our family's ``fsdp_applier``), and
trains a few steps on its shard of every batch the way fairseq2's trainer does: ``reduction="sum"``
then ``normalize_grads`` over the data-parallel gang by the total number of targets. It writes
the full final parameters to ``<out_dir>/<mode>-<case>.rank<r>.pt`` (and, for FSDP, which modules
are FSDP units). The test imports this file to train the single-process baseline (mean loss on
the combined batch) from the same definitions.

Batches: ``packed`` cases feed 1-D packed ``SequenceBatch`` es (the LM recipe's layout) whose
``target_mask`` drops each document's first token as a target, so no loss term crosses a document
and the shards' targets are exactly the combined batch's; ``padded`` cases feed (N, S) rows with
right padding (pad targets are ignored through ``pad_idx``).

Not collected by pytest (the name does not match ``test_*.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Final, Mapping

import torch
from torch import Tensor
from torch.distributed.elastic.multiprocessing.errors import record

# This folder is on sys.path under pytest and under torchrun (the script's own folder).
from fs2_helpers import TINY_HF

SEED: Final = 4321
STEPS: Final = 3
LEARNING_RATE: Final = 0.5
MOMENTUM: Final = 0.9
# SGD, not Adam: Adam's first step is ~lr * sign(grad), which would turn reduction-order
# rounding into lr-sized differences wherever a gradient is near zero.

PAD_IDX: Final = 1
DOC_LENGTHS: Final = (9, 5, 12, 7)
"""Tokens per document of every batch (4 documents: 2 per rank)."""

_BASE_HF: Final[Mapping[str, Any]] = {**TINY_HF, "model_type": "mega", "pad_token_id": PAD_IDX}
"""The fairseq2 tests' tiny causal HF config (vocab 100, width 32, 2 layers, chunk 8, no dropout)."""

CASES: Final[Mapping[str, Mapping[str, Any]]] = {
    "chunked-packed": {**_BASE_HF, "use_chunking": True},
    "unchunked-padded": {**_BASE_HF, "use_chunking": False, "chunk_size": -1},
}
"""Case name -> HF config values of the model (its layout is the name's second word)."""

MODES: Final = ("ddp", "fsdp2", "fsdp1")
"""fairseq2 wrappers: ``to_ddp``, ``to_fsdp(version="v2")``, ``to_fsdp(version="v1")``."""

FAILURE_SUFFIX: Final = ".error.txt"
"""A mode that raises writes ``<mode>-<case>.rank<r>.error.txt`` (its exception) instead of parameters."""


def model_config(case: str) -> Any:
    """The ``MegaLMConfig`` of ``case`` (through the adapter's HF translation)."""
    from mega_plugin.adapters.fairseq2.config import MegaLMConfig

    return MegaLMConfig.from_hf_config(CASES[case])


def model_hub() -> Any:
    from fairseq2.models.hub import ModelHubAccessor

    from mega_plugin.adapters.fairseq2.config import MEGA_FAMILY, MegaLMConfig
    from mega_plugin.adapters.fairseq2.model import MegaCausalLM

    return ModelHubAccessor(MEGA_FAMILY, MegaCausalLM, MegaLMConfig)()


def build_model(case: str, **placement: Any) -> Any:
    """The seeded model of ``case`` from the fairseq2 hub (``placement``: ``gangs=`` or ``device=``)."""
    torch.manual_seed(SEED)
    return model_hub().create_new_model(model_config(case), **placement).train()


def _documents(step: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(SEED + step)
    vocab = int(_BASE_HF["vocab_size"])
    return [torch.randint(PAD_IDX + 1, vocab, (length,), generator=generator) for length in DOC_LENGTHS]


def step_batch(case: str, step: int, *, rank: int = 0, world_size: int = 1) -> Any:
    """This rank's ``SequenceBatch`` of ``step`` (documents split in contiguous halves)."""
    from fairseq2.datasets import SequenceBatch

    documents = _documents(step)
    per_rank = len(documents) // world_size
    documents = documents[rank * per_rank : (rank + 1) * per_rank]
    lengths = [len(doc) for doc in documents]
    if case.endswith("-packed"):
        seqs = torch.cat(documents)  # (S_total,)
        not_first = torch.ones_like(seqs, dtype=torch.bool)
        starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)
        not_first[starts] = False  # a document's first token is no target: nothing crosses documents
        return SequenceBatch(seqs, lengths, packed=True, target_mask=not_first)
    seqs = torch.full((len(documents), max(lengths)), PAD_IDX)  # (N, S), right padding
    for row, doc in enumerate(documents):
        seqs[row, : len(doc)] = doc
    return SequenceBatch(seqs, lengths)


def batch_loss(model: Any, batch: Any, *, reduction: str) -> tuple[Tensor, int]:
    """The LM recipe's calls: auto-regressive split, ``as_input``, the model's loss; and the target count."""
    input_batch, target_batch = batch.as_auto_regressive()
    seqs, seqs_layout = input_batch.as_input()
    loss = model(
        seqs, seqs_layout, targets=target_batch.seqs, target_mask=target_batch.target_mask, reduction=reduction
    )
    return loss, target_batch.num_target_elements


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)


def parameters_of(model: torch.nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def train_single_process(case: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Initial and final parameters of ``case`` trained on the combined batches (mean loss)."""
    from fairseq2.device import Device

    model = build_model(case, device=Device("cpu"))
    initial = parameters_of(model)
    optimizer = make_optimizer(model)
    for step in range(STEPS):
        loss, _ = batch_loss(model, step_batch(case, step), reduction="mean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return initial, parameters_of(model)


def wrap(model: Any, mode: str, gangs: Any) -> Any:
    """``model`` under fairseq2's data-parallel wrapper ``mode`` (FSDP at ``layer`` granularity)."""
    from fairseq2.models.family import ModelFamily
    from fairseq2.nn.ddp import to_ddp
    from fairseq2.nn.fsdp import to_fsdp
    from fairseq2.runtime.dependency import get_dependency_resolver

    if mode == "ddp":
        return to_ddp(model, gangs)
    family = get_dependency_resolver().resolve(ModelFamily, key="mega")

    def applier(module: torch.nn.Module, wrapper: Any) -> torch.nn.Module:
        return family.apply_fsdp(module, "layer", wrapper)

    return to_fsdp(model, gangs, applier, version="v2" if mode == "fsdp2" else "v1", broadcast_state=mode == "fsdp2")


def full_parameters(dp_model: Any, mode: str) -> dict[str, Tensor]:
    """Unsharded parameters under their plain names (no wrapper prefixes)."""
    if mode == "ddp":
        return parameters_of(dp_model.module)
    if mode == "fsdp2":
        from torch.distributed.tensor import DTensor

        return {
            name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
            for name, p in dp_model.named_parameters()
        }
    from fairseq2.nn.fsdp import fsdp1_summon_full_parameters

    with fsdp1_summon_full_parameters(dp_model):
        return {
            name.replace("_fsdp_wrapped_module.", ""): p.detach().clone() for name, p in dp_model.named_parameters()
        }


def fsdp_units(dp_model: torch.nn.Module) -> list[str]:
    """Names (without wrapper prefixes) of the modules that are FSDP units, root first."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return [
        name.replace("_fsdp_wrapped_module.", "").replace("._fsdp_wrapped_module", "")
        for name, module in dp_model.named_modules()
        if isinstance(module, (FSDPModule, FullyShardedDataParallel))
    ]


def train_data_parallel(case: str, mode: str, gangs: Any) -> dict[str, Any]:
    """Train ``case`` under ``mode`` on this rank's shards; the full final parameters and the FSDP units."""
    from fairseq2.nn.utils.grad import normalize_grads

    dp_model = wrap(build_model(case, gangs=gangs), mode, gangs)
    optimizer = make_optimizer(dp_model)
    for step in range(STEPS):
        batch = step_batch(case, step, rank=gangs.dp.rank, world_size=gangs.dp.size)
        loss, num_targets = batch_loss(dp_model, batch, reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        normalize_grads(dp_model, gangs.dp, num_targets)  # as fairseq2's trainer: / total targets
        optimizer.step()
    optimizer.zero_grad()  # fairseq2's FSDP1 summon cannot re-attach flat gradients to full parameters
    return {"parameters": full_parameters(dp_model, mode), "fsdp_units": fsdp_units(dp_model)}


@record  # torchrun's failure summary then shows this rank's traceback, labelled with the rank
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for <mode>-<case>.rank<r>.pt")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()
    torch.set_num_threads(1)

    from fairseq2 import init_fairseq2
    from fairseq2.device import Device
    from fairseq2.gang import ProcessGroupGang, create_fsdp_gangs, create_parallel_gangs

    init_fairseq2()
    root_gang = ProcessGroupGang.create_default_process_group(Device("cpu"))  # gloo on CPU
    try:
        gangs = create_parallel_gangs(root_gang)  # tp_size=1: dp = root
        fsdp_gangs = create_fsdp_gangs(gangs)  # sdp = dp: shard over both ranks
        gangs.root.barrier()
        rank = gangs.root.rank
        for mode in args.modes:
            for case in CASES:
                stem = args.out_dir / f"{mode}-{case}.rank{rank}"
                try:
                    result = train_data_parallel(case, mode, gangs if mode == "ddp" else fsdp_gangs)
                except Exception as error:  # recorded for the test, which reports it (FSDP on CPU may be unsupported)
                    stem.with_name(stem.name + FAILURE_SUFFIX).write_text(f"{type(error).__name__}: {error}")
                    raise
                torch.save(result, stem.with_name(stem.name + ".pt"))
        gangs.root.barrier()
    finally:
        root_gang.close()


if __name__ == "__main__":
    main()
