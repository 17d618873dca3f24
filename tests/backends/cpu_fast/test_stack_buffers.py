"""The accelerated stack (``HandOverStack``) hands a layer's input over for reuse only where nobody
reads it afterwards.

Without gradients, a pre-norm block may write its output into its input tensor (no fresh
(B, L, D) buffer per layer). The stack allows that for every tensor it made itself, and only
when the hidden states are not returned: layer 0's input can be the caller's ``inputs_embeds``.
The expected values come from the same model with autograd on (which never writes in place).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from _support.backends import accelerated, blocked_modules, record_hand_overs
from _support.configs import tiny_config
from mega_plugin.core import MegaBackbone

LENGTH, BATCH, WIDTH = 24, 3, 16


def make_model(**overrides: Any) -> MegaBackbone:
    values: dict[str, Any] = dict(
        hidden_size=WIDTH,
        num_hidden_layers=3,
        use_chunking=True,
        chunk_size=8,
        normalize_before_mega=True,
    )
    values.update(overrides)
    torch.manual_seed(0)
    model = accelerated(MegaBackbone(tiny_config(**values)).eval(), block_rows=8)  # several row blocks per call
    assert len(blocked_modules(model)) == 2 * values["num_hidden_layers"], "the blocked path is not exercised"
    return model


def reference_run(model: MegaBackbone, embeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Hidden states with autograd recording (no layer writes into its input)."""
    with torch.enable_grad():
        out = model(inputs_embeds=embeds.clone().requires_grad_(True), output_hidden_states=True)
    assert out.hidden_states is not None
    return tuple(h.detach() for h in out.hidden_states)


@pytest.mark.parametrize("prenorm", [True, False], ids=["prenorm", "postnorm"])
def test_no_grad_forward_keeps_inputs_and_returned_hidden_states(
    prenorm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model(normalize_before_mega=prenorm)
    embeds = torch.randn(BATCH, LENGTH, WIDTH)
    expected = reference_run(model, embeds)
    given = embeds.clone()
    hand_overs = record_hand_overs(monkeypatch)
    with torch.no_grad():
        kept = model(inputs_embeds=given, output_hidden_states=True)
        assert hand_overs and not any(call.in_place for call in hand_overs)  # kept states are never overwritten
        hand_overs.clear()
        last_only = model(inputs_embeds=given)
    assert any(call.in_place for call in hand_overs), "nothing was handed over: the test would prove nothing"
    torch.testing.assert_close(given, embeds, rtol=0, atol=0, msg="the caller's inputs_embeds were overwritten")
    assert kept.hidden_states is not None and len(kept.hidden_states) == len(expected)
    for index, (got, want) in enumerate(zip(kept.hidden_states, expected)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, msg=f"hidden state {index}")
    torch.testing.assert_close(last_only.hidden, expected[-1], rtol=1e-6, atol=1e-6)
