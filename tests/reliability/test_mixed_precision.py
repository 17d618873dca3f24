"""Mixed precision on CPU: bf16 autocast and fp16 (autocast and a half model) stay finite and
close to fp32 for every attention function and norm; the EMA kernels accumulate in fp32.

Tolerances (relative to the fp32 output's scale, max-abs error / max-abs value):
bf16 (8 mantissa bits, ~4e-3 per rounding) 5e-2 on outputs and gradients; fp16 (11 bits) 1e-2.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytestmark = pytest.mark.hf
pytest.importorskip("transformers")

from _support.calls import ema_call  # noqa: E402
from _support.configs import NO_DROPOUT, TINY  # noqa: E402

from mega_plugin.adapters.hf import MegaConfig, MegaForMaskedLM  # noqa: E402
from mega_plugin.backends import cpu_fast, portable  # noqa: E402
from mega_plugin.core.ops import EmaOptions, REFERENCE_EMA, EmaCoefficients, reference_ema  # noqa: E402

ATTENTIONS = ("softmax", "laplace", "relu2")
NORMS = ("scalenorm", "layernorm", "rmsnorm", "batchnorm", "syncbatchnorm")
TOLERANCE = {torch.bfloat16: 5e-2, torch.float16: 1e-2}


def _relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx.float() - exact.float()).abs().max() / exact.float().abs().max().clamp_min(1e-12))


def _model(attention: str, norm: str) -> MegaForMaskedLM:
    torch.manual_seed(0)
    values: dict[str, Any] = {**TINY, **NO_DROPOUT, "attention_activation": attention, "normalization_type": norm}
    values.update(use_chunking=True, chunk_size=8)  # chunked attention + an EMA across chunks
    # eval: batch norms use running statistics, so fp32 and half runs see the same normaliser.
    return MegaForMaskedLM(MegaConfig(**values)).eval()


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, TINY["vocab_size"], (2, 19), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids}


def _run(model: MegaForMaskedLM, batch: dict[str, torch.Tensor], dtype: torch.dtype | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    if dtype is None:
        output = model(**batch)
    else:
        with torch.autocast("cpu", dtype=dtype):
            output = model(**batch)
    output.loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return output.logits.detach(), grads | {"loss": output.loss.detach().reshape(1)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_autocast_forward_and_backward_match_fp32(attention: str, norm: str, dtype: torch.dtype) -> None:
    model = _model(attention, norm)
    batch = _batch()
    logits32, grads32 = _run(model, batch, None)
    logits_half, grads_half = _run(model, batch, dtype)
    assert torch.isfinite(logits_half).all()
    assert _relative_error(logits_half, logits32) < TOLERANCE[dtype]
    assert grads_half.keys() == grads32.keys()
    for name, grad in grads_half.items():
        assert torch.isfinite(grad).all(), name
        # Per tensor; tiny gradients are compared at the scale of the largest one.
        scale = max(float(g.abs().max()) for g in grads32.values())
        error = float((grad.float() - grads32[name].float()).abs().max()) / scale
        assert error < TOLERANCE[dtype], f"{name}: {error:.3g}"


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_pure_fp16_model_runs_on_cpu(attention: str) -> None:
    """A model cast to fp16 (no autocast): CPU supports every op MEGA uses in half precision."""
    model = _model(attention, "layernorm")
    batch = _batch()
    logits32, _ = _run(model, batch, None)
    half = _model(attention, "layernorm").half()
    output = half(**batch)
    output.loss.backward()
    assert output.logits.dtype == torch.float16
    assert torch.isfinite(output.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in half.parameters() if p.grad is not None)
    assert _relative_error(output.logits, logits32) < TOLERANCE[torch.float16]


def _ema_inputs(dtype: torch.dtype, *, bidirectional: bool) -> tuple[torch.Tensor, EmaCoefficients]:
    generator = torch.Generator().manual_seed(2)
    batch, length, dim, components = 2, 600, 4, 3
    rows = 2 * dim if bidirectional else dim
    x = torch.randn(batch, length, dim, generator=generator).to(dtype)
    # Slow decays (q close to 1): the output sums hundreds of terms, where half-precision
    # accumulation (relative step 2**-8 for bf16) would lose several percent.
    coefficients = EmaCoefficients(
        input_gain=(0.05 * torch.rand(rows, components, generator=generator)).to(dtype),
        decay=(0.99 + 0.009 * torch.rand(rows, components, generator=generator)).to(dtype),
        output_gain=torch.randn(rows, components, generator=generator).to(dtype),
    )
    return x, coefficients


def _exact_ema(x: torch.Tensor, coefficients: EmaCoefficients, bidirectional: bool) -> torch.Tensor:
    """The causal recurrence of the formula, in float64 on the same (rounded) inputs."""
    assert not bidirectional
    def run(signal: torch.Tensor, gain: torch.Tensor, decay: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        state = torch.zeros(signal.shape[0], signal.shape[2], gain.shape[-1], dtype=torch.float64)
        outputs = []
        for step in range(signal.shape[1]):
            state = gain * signal[:, step, :, None] + decay * state
            outputs.append((state * out).sum(-1))
        return torch.stack(outputs, dim=1)

    gain, decay, out = (t.double() for t in (coefficients.input_gain, coefficients.decay, coefficients.output_gain))
    return run(x.double(), gain, decay, out)


EMA_KERNELS = [
    pytest.param(spec, id=spec.name)
    for spec in (REFERENCE_EMA, *portable.KERNELS, *cpu_fast.KERNELS)
    if spec.op == "ema"
]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidir"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("spec", EMA_KERNELS)
def test_ema_kernels_accumulate_in_fp32(spec: Any, dtype: torch.dtype, bidirectional: bool) -> None:
    x, coefficients = _ema_inputs(dtype, bidirectional=bidirectional)
    support = spec.supports(ema_call(bidirectional=bidirectional, length=x.shape[1], dtype=dtype, device=x.device))
    if not support.ok:
        pytest.skip(f"{spec.name} declines this call: {support.reason}")
    with torch.autocast("cpu", dtype=dtype):
        y, _ = spec.fn(x, coefficients, None, EmaOptions(bidirectional=bidirectional, truncation=None, return_state=False))
    assert y.dtype == torch.float32, f"{spec.name} returned {y.dtype}"
    if bidirectional:  # the same rounded inputs through the fp32 reference without autocast
        as_float = EmaCoefficients(*(t.float() for t in (coefficients.input_gain, coefficients.decay, coefficients.output_gain)))
        exact = reference_ema(x.float(), as_float, None, EmaOptions(bidirectional=True, truncation=None, return_state=False))[0]
    else:
        exact = _exact_ema(x, coefficients, bidirectional)
    # fp32 accumulation of ~600 terms stays near 1e-5; bf16/fp16 accumulation is off by >1e-3.
    assert _relative_error(y, exact) < 1e-4


def test_the_accumulation_check_can_fail() -> None:
    """Half-precision accumulation of the same sums misses the 1e-4 bound: the test above has teeth."""
    x, coefficients = _ema_inputs(torch.bfloat16, bidirectional=False)
    exact = _exact_ema(x, coefficients, False)
    state = torch.zeros(x.shape[0], x.shape[2], 3, dtype=torch.bfloat16)
    outputs = []
    for step in range(x.shape[1]):
        state = coefficients.input_gain * x[:, step, :, None] + coefficients.decay * state
        outputs.append((state * coefficients.output_gain).sum(-1))
    assert _relative_error(torch.stack(outputs, dim=1), exact) > 1e-3
    assert reference_ema is not None
