"""The decoding step's kept weights (``step_weights``) never outlive what they were derived from.

Each test decodes with the accelerated model and the core's reference copy, changes both the same
way between two steps (the change a user makes: an optimizer step, ``load_state_dict``, a forward
hook, a wrapped projection, a dtype, the thread count) and checks that the following steps
still give the core's result, which a stale snapshot would not.
"""

from __future__ import annotations

from typing import Callable, Final

import pytest
import torch
from torch import Tensor, nn

from _support.backends import accelerated, reference_copy
from _support.configs import CAUSAL, tiny_config
from mega_plugin.backends.cpu_fast import decode_step as step_module
from mega_plugin.backends.cpu_fast import layer as blocked_layer
from mega_plugin.backends.cpu_fast.step_weights import MAX_TABLE_SLOTS, step_weights, table_slots
from mega_plugin.core import MegaBackbone
from mega_plugin.core.state import MegaState

TOLERANCE: Final = dict(atol=1e-5, rtol=1e-5)
Change = Callable[[MegaBackbone], None]


def _perturb_ema(model: MegaBackbone) -> None:
    with torch.no_grad():  # in place, as an optimizer step does
        for layer in model.layers:
            layer.mega_layer.ema_gate.damping_factor.add_(0.3)
            layer.mega_layer.ema_gate.kernel_projection_matrix.mul_(-1.5)


def _perturb_bias(model: MegaBackbone) -> None:
    with torch.no_grad():
        for parameter in model.layers[0].mega_layer.rel_pos_bias.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))


def _load_new_state(model: MegaBackbone) -> None:
    generator = torch.Generator().manual_seed(5)
    fresh = {name: torch.randn(value.shape, generator=generator) * 0.2 for name, value in model.state_dict().items() if value.is_floating_point()}
    model.load_state_dict(fresh, strict=False)


def _replace_projection_parameter(model: MegaBackbone) -> None:
    projection = model.layers[0].mega_layer.mx_proj
    projection.weight = nn.Parameter(projection.weight.detach() * -1.0)  # a new tensor, a new storage


def _hook_value_projection(model: MegaBackbone) -> None:
    model.layers[0].mega_layer.v_proj.register_forward_hook(lambda module, inputs, output: output * 2.0)


class _Doubled(nn.Module):
    """A wrapper as PEFT's are: its output is not its inner linear's own product."""

    def __init__(self, inner: nn.Linear) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x) * 2.0


def _wrap_hidden_projection(model: MegaBackbone) -> None:
    layer = model.layers[0].mega_layer
    layer.h_proj = _Doubled(layer.h_proj)


CHANGES: Final[dict[str, Change]] = {
    "optimizer-step-ema": _perturb_ema,
    "bias-table": _perturb_bias,
    "load-state-dict": _load_new_state,
    "new-parameter": _replace_projection_parameter,
    "forward-hook": _hook_value_projection,
    "wrapped-projection": _wrap_hidden_projection,
}


def _decode(model: MegaBackbone, tokens: Tensor, *, prompt: int, change: Change, change_at: int) -> Tensor:
    with torch.no_grad():
        result = model(tokens[:, :prompt], use_cache=True)
        pieces, state = [], result.state
        assert isinstance(state, MegaState)
        for position in range(prompt, tokens.shape[1]):
            if position == change_at:
                change(model)
            result = model(tokens[:, position : position + 1], state=state, use_cache=True)
            pieces.append(result.hidden)
            state = result.state
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize("chunking", [dict(use_chunking=True, chunk_size=4), dict()], ids=["chunk4", "unchunked"])
@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_a_change_between_steps_is_seen(change: str, chunking: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    reference = MegaBackbone(tiny_config(**CAUSAL, **chunking)).eval()
    model = accelerated(reference_copy(reference))
    calls: list[int] = []
    real = step_module.decode_step
    monkeypatch.setattr(blocked_layer, "decode_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    tokens = torch.randint(3, 50, (2, 11))
    ours = _decode(model, tokens, prompt=2, change=CHANGES[change], change_at=6)
    expected = _decode(reference, tokens, prompt=2, change=CHANGES[change], change_at=6)
    assert calls, "the decoding step did not run"
    torch.testing.assert_close(ours, expected, **TOLERANCE)


def test_dtype_and_thread_changes_rebuild() -> None:
    torch.manual_seed(0)
    model = accelerated(MegaBackbone(tiny_config(**CAUSAL, use_chunking=True, chunk_size=4))).eval()
    layer = model.layers[0].mega_layer
    first = step_weights(layer)
    assert step_weights(layer) is first, "an unchanged layer rebuilt its snapshot"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert step_weights(layer) is not first
    finally:
        torch.set_num_threads(threads)
    model.double()
    rebuilt = step_weights(layer)
    assert rebuilt.attention.input_gain.dtype == torch.float32  # the EMA runs in fp32 whatever the model's dtype
    assert rebuilt.attention.value.weight is not None and rebuilt.attention.value.weight.dtype == torch.float64


def test_frame_tables_only_for_short_chunks() -> None:
    short = MegaBackbone(tiny_config(**CAUSAL, use_chunking=True, chunk_size=4)).layers[0].mega_layer
    assert table_slots(short) == 4 and step_weights(short).slots is not None
    long_config = tiny_config(**CAUSAL, use_chunking=True, chunk_size=MAX_TABLE_SLOTS + 1, max_positions=MAX_TABLE_SLOTS + 1)
    long = MegaBackbone(long_config).layers[0].mega_layer
    assert table_slots(long) is None and step_weights(long).slots is None
    unchunked = MegaBackbone(tiny_config(**CAUSAL)).layers[0].mega_layer
    assert table_slots(unchunked) is None


@pytest.mark.parametrize(
    "options",
    [
        dict(use_chunking=True, chunk_size=4),
        dict(use_chunking=True, chunk_size=3, attention_activation="laplace", relative_positional_bias="simple"),
        dict(use_chunking=True, chunk_size=5, attention_activation="relu2"),
    ],
    ids=["softmax-rotary", "laplace-simple", "relu2"],
)
def test_chunks_past_the_table_limit_compute_their_bias_row(options: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks longer than MAX_TABLE_SLOTS (lowered here) take the bias row from the bias module."""
    from mega_plugin.backends.cpu_fast import step_weights as weights_module

    monkeypatch.setattr(weights_module, "MAX_TABLE_SLOTS", 2)
    torch.manual_seed(0)
    reference = MegaBackbone(tiny_config(**CAUSAL, **options)).eval()
    model = accelerated(reference_copy(reference))
    assert step_weights(model.layers[0].mega_layer).slots is None
    tokens = torch.randint(3, 50, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, :3] = 0  # left padding reaching into the streamed tokens
    with torch.no_grad():
        whole = reference(tokens, attention_mask=mask).hidden
        result = model(tokens[:, :2], attention_mask=mask[:, :2], use_cache=True)
        pieces, state = [result.hidden], result.state
        for position in range(2, 12):
            result = model(tokens[:, position : position + 1], attention_mask=mask[:, : position + 1], state=state, use_cache=True)
            pieces.append(result.hidden)
            state = result.state
    real = mask.bool()
    torch.testing.assert_close(torch.cat(pieces, dim=1)[real], whole[real], **TOLERANCE)
