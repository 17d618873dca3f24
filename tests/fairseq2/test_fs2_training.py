"""Training as fairseq2 drives it: packed batches and the family's compile, AC and FSDP hooks."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from fs2_helpers import build_model, require_fairseq2

require_fairseq2()
pytestmark = pytest.mark.fairseq2

GRAD_TOLERANCE = 1e-5


def _family() -> Any:
    from fairseq2.models.family import ModelFamily
    from fairseq2.runtime.dependency import get_dependency_resolver

    return get_dependency_resolver().resolve(ModelFamily, key="mega")


def _packed_batch(seed: int) -> Any:
    from fairseq2.datasets import SequenceBatch

    generator = torch.Generator().manual_seed(seed)
    docs = []
    for length in (17, 9, 24, 12):
        start = int(torch.randint(4, 100, (1,), generator=generator))
        stride = int(torch.randint(1, 4, (1,), generator=generator))
        docs.append((start + stride * torch.arange(length)) % 96 + 4)  # learnable: arithmetic runs
    return SequenceBatch(torch.cat(docs), [len(d) for d in docs], packed=True)


def _mean_loss(model: Any, batch: Any) -> torch.Tensor:
    # Exactly the LM pretraining recipe's calls.
    input_batch, target_batch = batch.as_auto_regressive()
    seqs, seqs_layout = input_batch.as_input()
    return model(seqs, seqs_layout, targets=target_batch.seqs, reduction="mean")


def _grads(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_loss_falls_on_packed_batches(tiny_config: Any) -> None:
    model = build_model(tiny_config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(40):
        batch = _packed_batch(step % 4)
        input_batch, _ = batch.as_auto_regressive()
        seqs, seqs_layout = input_batch.as_input()
        assert seqs.dim() == 1 and seqs_layout.packed
        loss = _mean_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first, (first, last)


def test_layerwise_ac_gives_the_same_gradients(fs2_assets: Any, tiny_config: Any) -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    plain = build_model(tiny_config).train()
    checkpointed = _family().apply_layerwise_ac(copy.deepcopy(plain), 1)
    assert all(isinstance(layer, CheckpointWrapper) for layer in checkpointed.decoder.layers)
    batch = _packed_batch(0)
    loss_plain = _mean_loss(plain, batch)
    loss_checkpointed = _mean_loss(checkpointed, batch)
    loss_plain.backward()
    loss_checkpointed.backward()
    assert torch.equal(loss_plain, loss_checkpointed)
    expected = _grads(plain)
    # CheckpointWrapper inserts "_checkpoint_wrapped_module." into the parameter names.
    actual = {k.replace("_checkpoint_wrapped_module.", ""): v for k, v in _grads(checkpointed).items()}
    assert sorted(actual) == sorted(expected) and len(expected) > 10
    for name, grad in expected.items():
        assert (actual[name] - grad).abs().max() <= GRAD_TOLERANCE, name


class _RecordingWrapper:
    """Stands in for fairseq2's FSDP wrapper (needs a process group): records what it wraps."""

    def __init__(self) -> None:
        self.wrapped: list[torch.nn.Module] = []

    def __call__(self, module: torch.nn.Module, reshard_after_forward: bool = True) -> torch.nn.Module:
        self.wrapped.append(module)
        return module


@pytest.mark.parametrize("granularity", ["layer", "stack"])
def test_fsdp_applier_wraps_layers_or_the_stack(fs2_assets: Any, tiny_config: Any, granularity: str) -> None:
    model = build_model(tiny_config)
    layers = list(model.decoder.layers)
    decoder = model.decoder
    wrapper = _RecordingWrapper()
    assert _family().apply_fsdp(model, granularity, wrapper) is model
    if granularity == "layer":
        assert all(any(m is layer for m in wrapper.wrapped) for layer in layers)
    else:
        assert wrapper.wrapped == [decoder]


def test_fsdp_applier_rejects_unknown_granularity(fs2_assets: Any, tiny_config: Any) -> None:
    from fairseq2.error import NotSupportedError

    with pytest.raises(NotSupportedError, match="granularity.*'layer' or 'stack'.*'model'"):
        _family().apply_fsdp(build_model(tiny_config), "model", _RecordingWrapper())


def _has_c_compiler() -> bool:
    import shutil

    return any(shutil.which(name) for name in ("gcc", "cc", "clang"))


@pytest.mark.parametrize(
    "backend",
    [
        "aot_eager",
        pytest.param(
            "inductor",
            marks=[
                pytest.mark.slow,  # ~1.5 min with a cold inductor cache on 2 cores
                pytest.mark.skipif(not _has_c_compiler(), reason="inductor on CPU needs a C compiler (gcc/cc)"),
            ],
        ),
    ],
)
def test_compiler_hook_compiles_forward_and_backward(fs2_assets: Any, tiny_config: Any, backend: str) -> None:
    # aot_eager traces forward and backward graphs (Dynamo + AOTAutograd) without generating code;
    # inductor, the recipe's default, also generates and builds C++ kernels. One layer keeps it
    # short: the hook compiles each block on its own.
    import dataclasses

    config = dataclasses.replace(tiny_config, num_hidden_layers=1)
    eager = build_model(config).train()
    compiled = copy.deepcopy(eager)
    _family().compile(compiled, backend=backend, dynamic=False)
    counters = torch._dynamo.utils.counters
    counters.clear()
    ids = torch.randint(2, 100, (2, 16), generator=torch.Generator().manual_seed(3))
    from fairseq2.nn import BatchLayout

    loss_eager = eager(ids, BatchLayout.of(ids), ids, reduction="mean")
    loss_compiled = compiled(ids, BatchLayout.of(ids), ids, reduction="mean")
    loss_eager.backward()
    loss_compiled.backward()
    assert counters["stats"]["unique_graphs"] >= 1, "torch.compile produced no graph"
    assert (loss_compiled - loss_eager).abs() <= 1e-5
    expected, actual = _grads(eager), _grads(compiled)
    assert sorted(actual) == sorted(expected)
    for name, grad in expected.items():
        assert (actual[name] - grad).abs().max() <= GRAD_TOLERANCE, name
