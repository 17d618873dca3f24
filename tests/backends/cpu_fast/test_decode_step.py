"""The one-token decoding step of ``cpu_fast`` against the core's streaming path and its whole-sequence forward.

Both references are the core's own modules (``reference_copy``: every backend undone), whose
streaming and whole-sequence outputs the HF and fairseq2 parity tests check against
transformers 4.57's MEGA. The step must give the same hidden states and the same state, token
after token, over the option space of a causal layer, and must actually run (a spy counts it).
"""

from __future__ import annotations

from typing import Any, Final

import pytest
import torch
from torch import Tensor

from _support.backends import accelerated, reference_copy
from _support.configs import CAUSAL, tiny_config
from mega_plugin.backends.cpu_fast import decode_step as step_module
from mega_plugin.backends.cpu_fast import layer as blocked_layer
from mega_plugin.core import MegaBackbone
from mega_plugin.core.state import MegaState

TOLERANCE: Final = dict(atol=1e-5, rtol=1e-5)
CASES: Final[dict[str, dict[str, Any]]] = {
    "chunk4-softmax-rotary": dict(use_chunking=True, chunk_size=4),
    "unchunked": dict(),
    "chunk3-laplace-simple": dict(
        use_chunking=True, chunk_size=3, attention_activation="laplace", relative_positional_bias="simple"
    ),
    "relu2": dict(use_chunking=True, chunk_size=5, attention_activation="relu2"),
    "postnorm-layernorm": dict(
        use_chunking=True, chunk_size=4, normalize_before_mega=False, normalize_before_ffn=False,
        normalization_type="layernorm",
    ),
    "rmsnorm-gelu": dict(normalization_type="rmsnorm", activation="gelu"),
    "batchnorm-eval": dict(use_chunking=True, chunk_size=4, normalization_type="batchnorm"),
    "no-nffn-relu": dict(use_normalized_ffn=False, activation="relu"),
}


def stream(model: MegaBackbone, tokens: Tensor, mask: Tensor | None, *, prompt: int) -> tuple[Tensor, MegaState]:
    """Hidden states of ``tokens`` (B, L): the first ``prompt`` at once, then one token per call."""
    with torch.no_grad():
        result = model(tokens[:, :prompt], attention_mask=None if mask is None else mask[:, :prompt], use_cache=True)
        pieces, state = [result.hidden], result.state
        for position in range(prompt, tokens.shape[1]):
            step_mask = None if mask is None else mask[:, : position + 1]
            result = model(tokens[:, position : position + 1], attention_mask=step_mask, state=state, use_cache=True)
            pieces.append(result.hidden)
            state = result.state
    return torch.cat(pieces, dim=1), state


def count_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, one entry per call served by the decoding step."""
    calls: list[int] = []
    real = step_module.decode_step

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(blocked_layer, "decode_step", spy)
    return calls


@pytest.mark.parametrize("padding", [False, True], ids=["no-padding", "left-padding"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_step_matches_the_core(case: str, padding: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    reference = MegaBackbone(tiny_config(**CAUSAL, **CASES[case])).eval()
    if "batchnorm" in case:  # running statistics that are not the identity
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    model = accelerated(reference_copy(reference))
    batch, length, prompt = 3, 13, 2
    tokens = torch.randint(3, 50, (batch, length))
    mask = None
    if padding:
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[1, :3] = 0  # padding that reaches into the streamed tokens
        mask[2, :1] = 0
    steps = count_steps(monkeypatch)
    hidden, state = stream(model, tokens, mask, prompt=prompt)
    layers = len(model.layers)
    # a call whose new token is padding in some row goes through the core
    real_calls = length - prompt if mask is None else int(mask[:, prompt:].bool().all(dim=0).sum())
    assert len(steps) == layers * real_calls, "the decoding step did not serve every one-token call of real tokens"
    expected, expected_state = stream(reference, tokens, mask, prompt=prompt)
    real = slice(None) if mask is None else mask.bool()
    torch.testing.assert_close(hidden[real], expected[real], **TOLERANCE)
    with torch.no_grad():
        whole = reference(tokens, attention_mask=mask).hidden
    torch.testing.assert_close(hidden[real], whole[real], **TOLERANCE)
    assert state.position == expected_state.position == length
    for ours, theirs in zip(state.layers, expected_state.layers):
        for name in ("ema", "keys", "values", "key_mask"):
            mine, other = getattr(ours, name), getattr(theirs, name)
            assert (mine is None) == (other is None), name
            if mine is not None:
                torch.testing.assert_close(mine, other, **TOLERANCE, msg=name)


def test_step_with_cross_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    reference = MegaBackbone(tiny_config(**CAUSAL, add_cross_attention=True, use_chunking=True, chunk_size=4)).eval()
    model = accelerated(reference_copy(reference))
    tokens = torch.randint(3, 50, (2, 9))
    encoder = torch.randn(2, 5, 16)
    steps = count_steps(monkeypatch)

    def run(net: MegaBackbone) -> Tensor:
        with torch.no_grad():
            result = net(tokens[:, :1], encoder_hidden=encoder, use_cache=True)
            pieces, state = [result.hidden], result.state
            for position in range(1, tokens.shape[1]):
                result = net(tokens[:, position : position + 1], state=state, use_cache=True)
                pieces.append(result.hidden)
                state = result.state
        return torch.cat(pieces, dim=1)

    ours = run(model)
    assert steps, "the decoding step did not run"
    torch.testing.assert_close(ours, run(reference), **TOLERANCE)


@pytest.mark.parametrize(
    "change",
    ["truncation", "training-dropout", "need-weights", "named-kernel", "grad"],
)
def test_step_steps_aside(change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls whose result the step would not reproduce go through the core."""
    overrides: dict[str, Any] = {}
    if change == "truncation":
        overrides["truncation"] = 4
    if change == "training-dropout":
        overrides["dropout_prob"] = 0.5
    if change == "named-kernel":
        overrides["attention_kernel"] = "reference"
    torch.manual_seed(0)
    model = accelerated(MegaBackbone(tiny_config(**CAUSAL, **overrides)))
    model.train(change == "training-dropout")
    steps = count_steps(monkeypatch)
    tokens = torch.randint(3, 50, (2, 4))
    with torch.set_grad_enabled(change == "grad"):
        state = model(tokens[:, :2], use_cache=True).state
        model(tokens[:, 2:3], state=state, use_cache=True, output_attentions=change == "need-weights")
    assert steps == []
