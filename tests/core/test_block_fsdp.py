"""FSDP2 (``fully_shard``) around each MEGA block.

FSDP2 hooks a unit's backward through the tensors ``tree_flatten`` finds in the unit's output.
A block returns a :class:`BlockResult` dataclass, which the core registers as a pytree node
(without it, two ranks on torch 2.9 fail in the backward on freed weights: the two-rank test is
``tests/reliability/test_distributed_ddp.py``). Here: the registration itself, and, in one
process (a world of one, gloo), sharded blocks give exactly the unwrapped model's gradients.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterator

import pytest
import torch
import torch.distributed as dist
from torch.utils._pytree import tree_flatten

from _support.configs import CAUSAL, TINY, tiny_config
from mega_plugin.core import MegaBackbone, MegaCoreConfig
from mega_plugin.core.block import BlockResult

fsdp = pytest.importorskip("torch.distributed.fsdp")


@pytest.fixture
def world_of_one(tmp_path: Path) -> Iterator[None]:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def make_config(chunk: int | None) -> MegaCoreConfig:
    return tiny_config(
        **CAUSAL, ema_projection_size=3, use_chunking=chunk is not None, chunk_size=chunk or -1, initializer_range=0.3
    )


def test_block_result_is_a_pytree_node() -> None:
    hidden, weights = torch.randn(2, 3, 4), torch.randn(2, 1, 3, 3)
    leaves, _ = tree_flatten(BlockResult(hidden=hidden, weights=weights, cross_weights=None, state=None))
    assert any(leaf is hidden for leaf in leaves) and any(leaf is weights for leaf in leaves), leaves


@pytest.mark.parametrize("chunk", [None, 4], ids=["nochunk", "chunk4"])
def test_fully_sharded_blocks_give_the_unwrapped_gradients(world_of_one: None, chunk: int | None) -> None:
    torch.manual_seed(0)
    # eval(): no dropout, so both models see the same function; autograd still runs.
    plain = MegaBackbone(make_config(chunk)).eval()
    sharded = copy.deepcopy(plain)
    for layer in sharded.layers:
        fsdp.fully_shard(layer)
    fsdp.fully_shard(sharded)
    tokens = torch.randint(2, TINY["vocab_size"], (2, 9))
    outputs = []
    for model in (plain, sharded):
        hidden = model(tokens).hidden
        hidden.square().mean().backward()
        outputs.append(hidden.detach())
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    for (name, reference), (_, wrapped) in zip(plain.named_parameters(), sharded.named_parameters()):
        assert wrapped.grad is not None, f"{name}: no gradient through the sharded block"
        gradient = wrapped.grad.full_tensor() if hasattr(wrapped.grad, "full_tensor") else wrapped.grad
        torch.testing.assert_close(gradient, reference.grad, rtol=1e-6, atol=1e-7, msg=name)
