"""``attn_implementation="eager" | "sdpa"``: both accepted, same outputs, and "sdpa" really runs
``torch.nn.functional.scaled_dot_product_attention`` where the math allows (4.57 and 5.x).

On CPU the registry serves frames of at least ``MIN_CPU_KEYS`` keys through SDPA (shorter ones
are as fast through the reference), so the frames here are that long; hidden size 16 keeps them
cheap. Eager is the reference kernel (the 4.57 reference's arithmetic): the parity bar is fp32
rounding of a different summation order.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM, MegaModel  # noqa: E402
from mega_plugin.adapters.hf.attention_implementation import attention_kernel_for  # noqa: E402
from mega_plugin.backends.portable.attention_sdpa import MIN_CPU_KEYS  # noqa: E402

pytestmark = pytest.mark.hf

TOLERANCE = 2e-5
FRAME = MIN_CPU_KEYS


def config(**overrides: Any) -> MegaConfig:
    values: dict[str, Any] = dict(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        intermediate_size=24,
        shared_representation_size=8,
        ema_projection_size=4,
        nffn_hidden_size=20,
        max_positions=2 * FRAME,
        pad_token_id=1,
        initializer_range=0.1,
    )
    values.update(overrides)
    return MegaConfig(**values)


def pair(model_class: type, **overrides: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same weights under eager and under sdpa."""
    torch.manual_seed(0)
    eager = model_class._from_config(config(**overrides), attn_implementation="eager").eval()
    sdpa = model_class._from_config(config(**overrides), attn_implementation="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    return eager, sdpa


class SdpaCalls:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = F.scaled_dot_product_attention

        def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(F, "scaled_dot_product_attention", counted)


def ids(length: int, batch: int = 2) -> torch.Tensor:
    return torch.randint(3, 40, (batch, length), generator=torch.Generator().manual_seed(3))


CASES = {
    "bidirectional-full": (MegaModel, dict(), FRAME),
    "bidirectional-chunk": (MegaModel, dict(use_chunking=True, chunk_size=FRAME), 2 * FRAME),
    "causal-full": (MegaForCausalLM, dict(is_decoder=True, bidirectional=False), FRAME),
    "causal-chunk": (MegaForCausalLM, dict(is_decoder=True, bidirectional=False, use_chunking=True, chunk_size=FRAME), 2 * FRAME),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sdpa_matches_eager_and_runs_sdpa(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model_class, overrides, length = CASES[case]
    eager, sdpa = pair(model_class, **overrides)
    inputs = ids(length)
    calls = SdpaCalls(monkeypatch)
    with torch.no_grad():
        expected = eager(inputs, use_cache=False)[0]
        assert calls.count == 0, "eager must not call scaled_dot_product_attention"
        actual = sdpa(inputs, use_cache=False)[0]
    assert calls.count >= eager.config.num_hidden_layers
    torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=0)


def test_sdpa_with_padding_or_weights_falls_back_to_the_same_math(monkeypatch: pytest.MonkeyPatch) -> None:
    eager, sdpa = pair(MegaModel)
    inputs = ids(FRAME)
    mask = torch.ones_like(inputs)
    mask[1, -7:] = 0
    with torch.no_grad():
        expected = eager(inputs, attention_mask=mask, output_attentions=True)
        actual = sdpa(inputs, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(actual.last_hidden_state, expected.last_hidden_state, atol=TOLERANCE, rtol=0)
    for ours, theirs in zip(actual.attentions, expected.attentions):
        torch.testing.assert_close(ours, theirs, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("activation", ["laplace", "relu2"])
def test_laplace_and_relu2_never_reach_sdpa(activation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    eager, sdpa = pair(MegaModel, attention_activation=activation)
    inputs = ids(FRAME)
    calls = SdpaCalls(monkeypatch)
    with torch.no_grad():
        expected = eager(inputs)[0]
        actual = sdpa(inputs)[0]
    assert calls.count == 0
    torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=0)


def test_set_attn_implementation_switches_the_kernel() -> None:
    model = MegaModel(config())
    model.set_attn_implementation("eager")
    assert {layer.mega_layer.kernel_name for layer in model.layers} == {"reference"}
    model.set_attn_implementation("sdpa")
    assert {layer.mega_layer.kernel_name for layer in model.layers} == {"sdpa,auto"}


def test_the_default_keeps_the_registrys_choice() -> None:
    """Nothing asked for: transformers records "sdpa", the kernels stay on auto (fast paths intact)."""
    model = MegaForCausalLM(config(is_decoder=True, bidirectional=False))
    assert {layer.mega_layer.kernel_name for layer in model.mega.layers} == {"auto"}


def test_an_explicit_attention_kernel_wins() -> None:
    assert attention_kernel_for("eager", configured_kernel="sdpa") == "sdpa"
    assert attention_kernel_for("sdpa", configured_kernel="reference") == "reference"


@pytest.mark.parametrize("name", ["flash_attention_2", "flex_attention"])
def test_other_implementations_are_refused_with_the_allowed_values(name: str) -> None:
    with pytest.raises(ValueError):
        MegaModel._from_config(config(), attn_implementation=name)
    with pytest.raises(ValueError, match="allowed values: eager, sdpa"):
        attention_kernel_for(name, configured_kernel="auto")
