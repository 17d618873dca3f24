"""DDP training of a tiny HF MEGA causal LM: the worker ``torchrun`` runs, and the recipe both sides share.

``test_distributed_ddp.py`` launches this file with ``python -m torch.distributed.run
--nproc-per-node 2`` (CPU, gloo). Each rank trains :data:`CASES` with
``DistributedDataParallel`` (and the chunked case also with FSDP2's ``fully_shard``) on its shard
of every step's batch and writes its final parameters to ``<out_dir>/<case>.<wrapper>.rank<r>.pt``. The test imports this same file
to train the single-process baseline on the combined batches, so both sides build the same
model, batches and optimizer from one definition.

Loss normalisation: the single process takes the mean token loss over the combined batch. DDP
*averages* gradients over ranks, and padding gives the ranks different numbers of target
tokens, so each rank rescales its own mean loss to ``local_sum * world_size / global_count``;
the DDP average then is exactly ``global_sum / global_count``, the combined-batch mean.

Not collected by pytest (the name does not match ``test_*.py``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Final, Mapping

import torch
from torch import Tensor
from torch.distributed.elastic.multiprocessing.errors import record

# tests/ is on sys.path under pytest (pyproject's pythonpath) and under torchrun (the launcher's PYTHONPATH).
from _support.configs import CAUSAL, NO_DROPOUT, TINY

IGNORE_INDEX: Final = -100
"""Label of positions the loss skips (HF's ``cross_entropy`` default)."""

SEED: Final = 1234
STEPS: Final = 3
LEARNING_RATE: Final = 0.5
MOMENTUM: Final = 0.9
# SGD, not Adam: Adam's first step is ~lr * sign(grad), which turns the last-bit differences
# of a different reduction order into lr-sized ones wherever a gradient is near zero.

BATCH_ROWS: Final = 4
SEQ_LEN: Final = 11
"""Combined batch: 4 rows of 11 tokens (not a multiple of the chunk size)."""

ROW_LENGTHS: Final = (11, 7, 9, 4)
"""Real tokens per row; rows 1 and 3 are right-padded, row 2 left-padded (see :func:`step_batch`)."""

_TINY: Final[Mapping[str, Any]] = {**TINY, **CAUSAL, **NO_DROPOUT}
"""The reliability tests' tiny causal model (vocab 50, width 16, 2 layers), fp32, no dropout."""

CASES: Final[Mapping[str, Mapping[str, Any]]] = {
    "chunked": {**_TINY, "use_chunking": True, "chunk_size": 4},
    "unchunked": {**_TINY, "use_chunking": False, "chunk_size": -1},
}
"""Case name -> HF ``MegaConfig`` values (fp32, dropout 0)."""


def build_model(case: str) -> Any:
    """The seeded ``MegaForCausalLM`` of ``case`` in train mode (identical on every process)."""
    from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM

    torch.manual_seed(SEED)
    return MegaForCausalLM(MegaConfig(**CASES[case])).train()


def step_batch(step: int) -> tuple[Tensor, Tensor, Tensor]:
    """Combined batch of ``step``: ``input_ids``, ``attention_mask``, ``labels``, each (B, L)."""
    generator = torch.Generator().manual_seed(SEED + step)
    vocab = int(_TINY["vocab_size"])
    pad = int(_TINY["pad_token_id"])
    input_ids = torch.randint(2, vocab, (BATCH_ROWS, SEQ_LEN), generator=generator)
    mask = torch.zeros(BATCH_ROWS, SEQ_LEN, dtype=torch.long)
    for row, length in enumerate(ROW_LENGTHS):
        if row == 2:
            mask[row, SEQ_LEN - length :] = 1  # left padding
        else:
            mask[row, :length] = 1  # right padding
    input_ids = input_ids.masked_fill(mask == 0, pad)
    labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)
    return input_ids, mask, labels


def shard(batch: tuple[Tensor, ...], rank: int, world_size: int) -> tuple[Tensor, ...]:
    """Rows ``rank * B / W`` to ``(rank + 1) * B / W`` of every tensor of ``batch``."""
    rows = BATCH_ROWS // world_size
    return tuple(t[rank * rows : (rank + 1) * rows] for t in batch)


def target_count(labels: Tensor) -> Tensor:
    """Number of positions the causal loss scores (labels are shifted by one)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)


def parameters_of(model: torch.nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def train_single_process(case: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Initial and final parameters of ``case`` trained on the combined batches, mean loss."""
    model = build_model(case)
    initial = parameters_of(model)
    optimizer = make_optimizer(model)
    for step in range(STEPS):
        input_ids, mask, labels = step_batch(step)
        loss = model(input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return initial, parameters_of(model)


def train_data_parallel(case: str, rank: int, world_size: int) -> dict[str, Tensor]:
    """Final parameters of ``case`` trained with DDP on this rank's shard of every batch."""
    from torch.nn.parallel import DistributedDataParallel

    model = DistributedDataParallel(build_model(case))
    train_steps(model, rank, world_size)
    return parameters_of(model.module)


def train_steps(model: torch.nn.Module, rank: int, world_size: int) -> None:
    """STEPS steps of a data-parallel ``model`` on this rank's shard of each batch.

    The wrapper averages the gradients over the ranks, so each rank's mean loss is rescaled by
    its share of the target tokens: the update then equals one process on the whole batch.
    """
    import torch.distributed as dist

    optimizer = make_optimizer(model)
    for step in range(STEPS):
        input_ids, mask, labels = shard(step_batch(step), rank, world_size)
        local_count = target_count(labels)
        global_count = local_count.clone()
        dist.all_reduce(global_count)  # sum over ranks
        local_mean = model(input_ids, attention_mask=mask, labels=labels).loss
        loss = local_mean * local_count * world_size / global_count
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def train_fully_sharded(case: str, rank: int, world_size: int) -> dict[str, Tensor]:
    """Final parameters of ``case`` trained with FSDP2 (every MEGA block its own unit) on this rank's shard.

    FSDP2 averages gradients over ranks like DDP, so the loss is rescaled the same way. Its backward
    re-gathers a block's weights through the tensors it finds in the block's output (a
    ``BlockResult``, which the core registers as a pytree node).
    """
    from torch.distributed.fsdp import fully_shard

    model = build_model(case)
    for block in model.mega.layers:
        fully_shard(block)
    fully_shard(model)
    train_steps(model, rank, world_size)
    # Parameters are DTensors sharded over the ranks: gather the full tensors (a collective).
    return {name: p.full_tensor().detach().clone() for name, p in model.named_parameters()}


WRAPPERS: Final = {"ddp": train_data_parallel, "fsdp2": train_fully_sharded}
"""Wrapper name -> training function; each writes ``<case>.<wrapper>.rank<r>.pt``."""

FSDP2_CASES: Final = ("chunked",)
"""FSDP2 runs one case: its point is the backward through sharded blocks, not the attention grid."""


FAIL_RANK_VARIABLE: Final = "MEGA_DDP_WORKER_FAIL_RANK"
"""If set to a rank, that rank raises at start (the test of the launcher's crash report)."""


def fail_on_purpose(rank: str) -> None:
    if os.environ.get(FAIL_RANK_VARIABLE) == rank:
        raise RuntimeError(f"rank {rank} failed on purpose ({FAIL_RANK_VARIABLE}={rank})")


@record  # torchrun's failure summary then shows this rank's traceback, labelled with the rank
def main() -> None:
    import torch.distributed as dist

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for <case>.rank<r>.pt")
    args = parser.parse_args()
    fail_on_purpose(os.environ["RANK"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        if BATCH_ROWS % world_size:
            raise ValueError(f"world size {world_size} must divide the batch of {BATCH_ROWS} rows")
        for wrapper, train in WRAPPERS.items():
            for case in CASES if wrapper == "ddp" else FSDP2_CASES:
                parameters = train(case, rank, world_size)
                torch.save(parameters, args.out_dir / f"{case}.{wrapper}.rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
