"""The ``chunked_scan`` EMA kernel against the FFT ``reference`` kernel: outputs, states, gradients.

The reference kernel is itself checked against float64 double sums in
``tests/core/ops/test_ema_kernel.py``; here
the fast kernel must reproduce it (and the gradients autograd derives from it) for causal and
bidirectional EMAs, lengths around and across the chunk size, carried states, and the
truncation cases it accepts. Calls it cannot serve must be declined with a reason.
"""

from __future__ import annotations

from typing import Final

import pytest
import torch
from torch import Tensor

from _support.calls import ema_call
from mega_plugin.backends.portable import chunked_scan_ema
from mega_plugin.backends.portable.ema_chunked_scan import CHUNK_STEPS, chunked_scan_supports
from mega_plugin.core import MultiDimensionDampedEma
from mega_plugin.core.ops import EmaOptions, EmaCoefficients, KernelError, reference_ema, select

BATCH, DIM, COMPONENTS = 2, 5, 4
LENGTHS: Final = (1, 2, 17, CHUNK_STEPS - 1, CHUNK_STEPS, CHUNK_STEPS + 1, 3 * CHUNK_STEPS + 7, 1000)
TOLERANCE: Final = dict(atol=2e-5, rtol=1e-4)


def random_coefficients(channels: int, *, generator: torch.Generator, low_decay: float = 0.05) -> EmaCoefficients:
    """Gains ~ N(0, 1); decays in (low_decay, 0.999): short and very long memories alike."""
    return EmaCoefficients(
        input_gain=torch.randn(channels, COMPONENTS, generator=generator),
        decay=low_decay + (0.999 - low_decay) * torch.rand(channels, COMPONENTS, generator=generator),
        output_gain=torch.randn(channels, COMPONENTS, generator=generator),
    )


def leaf_copies(coefficients: EmaCoefficients) -> EmaCoefficients:
    """The same coefficients as fresh leaves that record gradients."""
    return EmaCoefficients(
        *(t.detach().clone().requires_grad_(True) for t in (coefficients.input_gain, coefficients.decay, coefficients.output_gain))
    )


def run_both(
    x: Tensor,
    coefficients: EmaCoefficients,
    *,
    bidirectional: bool,
    truncation: int | None = None,
    initial_state: Tensor | None = None,
    return_state: bool = False,
) -> None:
    """Compare outputs, final states and all gradients of the two kernels."""
    results = []
    for kernel in (reference_ema, chunked_scan_ema):
        inputs = x.detach().clone().requires_grad_(True)
        leaves = leaf_copies(coefficients)
        state = None if initial_state is None else initial_state.detach().clone().requires_grad_(True)
        options = EmaOptions(bidirectional=bidirectional, truncation=truncation, return_state=return_state)
        output, final = kernel(inputs, leaves, state, options)
        assert output.dtype == torch.float32 and output.shape == x.shape
        # A fixed random projection of everything returned makes every gradient path count.
        weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(7))
        loss = (output * weights).sum()
        if final is not None:
            loss = loss + (final * torch.randn(final.shape, generator=torch.Generator().manual_seed(8))).sum()
        loss.backward()
        grads = [inputs.grad, leaves.input_gain.grad, leaves.decay.grad, leaves.output_gain.grad]
        if state is not None:
            grads.append(state.grad)
        results.append((output.detach(), None if final is None else final.detach(), grads))
    (ref_out, ref_state, ref_grads), (fast_out, fast_state, fast_grads) = results
    torch.testing.assert_close(fast_out, ref_out, **TOLERANCE)
    if return_state:
        assert fast_state is not None and ref_state is not None
        torch.testing.assert_close(fast_state, ref_state, **TOLERANCE)
    for name, fast_grad, ref_grad in zip(("x", "input_gain", "decay", "output_gain", "state"), fast_grads, ref_grads):
        # Gradients sum over many positions: compare relative to their scale.
        scale = ref_grad.abs().max().clamp(min=1.0)
        torch.testing.assert_close(fast_grad / scale, ref_grad / scale, atol=5e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_matches_reference_outputs_and_gradients(length: int, bidirectional: bool) -> None:
    generator = torch.Generator().manual_seed(length)
    coefficients = random_coefficients(2 * DIM if bidirectional else DIM, generator=generator)
    x = torch.randn(BATCH, length, DIM, generator=generator)
    run_both(x, coefficients, bidirectional=bidirectional)


@pytest.mark.parametrize("length", (1, CHUNK_STEPS - 3, CHUNK_STEPS, 2 * CHUNK_STEPS + 5), ids=lambda n: f"L{n}")
def test_carried_state_matches_reference(length: int) -> None:
    generator = torch.Generator().manual_seed(100 + length)
    coefficients = random_coefficients(DIM, generator=generator)
    x = torch.randn(BATCH, length, DIM, generator=generator)
    state = torch.randn(BATCH, DIM, COMPONENTS, generator=generator)
    run_both(x, coefficients, bidirectional=False, initial_state=state, return_state=True)
    run_both(x, coefficients, bidirectional=False, return_state=True)


def test_split_sequence_with_state_equals_one_pass() -> None:
    """Feeding 150 + 111 steps with the carried state equals one pass over 261 steps."""
    generator = torch.Generator().manual_seed(3)
    coefficients = random_coefficients(DIM, generator=generator)
    x = torch.randn(BATCH, 261, DIM, generator=generator)
    options = EmaOptions(bidirectional=False, truncation=None, return_state=True)
    whole, whole_state = chunked_scan_ema(x, coefficients, None, options)
    first, state = chunked_scan_ema(x[:, :150], coefficients, None, options)
    second, final = chunked_scan_ema(x[:, 150:], coefficients, state, options)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, **TOLERANCE)
    torch.testing.assert_close(final, whole_state, **TOLERANCE)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_truncation_not_shorter_than_the_length_is_served(bidirectional: bool) -> None:
    generator = torch.Generator().manual_seed(11)
    coefficients = random_coefficients(2 * DIM if bidirectional else DIM, generator=generator)
    x = torch.randn(BATCH, 90, DIM, generator=generator)
    run_both(x, coefficients, bidirectional=bidirectional, truncation=90)
    run_both(x, coefficients, bidirectional=bidirectional, truncation=500)


def test_truncation_shorter_than_the_length_is_declined_and_auto_falls_back() -> None:
    call = ema_call(bidirectional=True, truncation=16, length=90)
    support = chunked_scan_supports(call)
    assert not support.ok and "truncation=16" in support.reason
    assert select("ema", "auto", call).name == "reference"
    with pytest.raises(KernelError, match="chunked_scan.*truncation=16"):
        select("ema", "chunked_scan", call)
    x = torch.zeros(1, 90, DIM)
    with pytest.raises(ValueError, match="truncation=16 < length=90"):
        chunked_scan_ema(x, random_coefficients(DIM, generator=torch.Generator()), None, EmaOptions(bidirectional=False, truncation=16, return_state=False))


def test_bidirectional_state_is_refused() -> None:
    x = torch.zeros(1, 8, DIM)
    coefficients = random_coefficients(2 * DIM, generator=torch.Generator())
    with pytest.raises(ValueError, match="bidirectional=True"):
        chunked_scan_ema(x, coefficients, None, EmaOptions(bidirectional=True, truncation=None, return_state=True))


def test_auto_selection() -> None:
    assert select("ema", "auto", ema_call(length=4096)).name == "chunked_scan"
    assert select("ema", "auto", ema_call(bidirectional=True, length=8)).name == "chunked_scan"
    assert select("ema", "auto", ema_call(length=1)).name == "recurrent"


def test_tiny_decays_give_no_nan_and_match() -> None:
    """Decays near 0 underflow q**l; the flushed weights must still reproduce the reference."""
    generator = torch.Generator().manual_seed(5)
    coefficients = random_coefficients(2 * DIM, generator=generator, low_decay=1e-4)
    x = torch.randn(BATCH, 300, DIM, generator=generator)
    run_both(x, coefficients, bidirectional=True)


def test_low_precision_input_accumulates_in_fp32() -> None:
    generator = torch.Generator().manual_seed(6)
    coefficients = random_coefficients(DIM, generator=generator)
    x = torch.randn(BATCH, 130, DIM, generator=generator).to(torch.bfloat16)
    fast, _ = chunked_scan_ema(x, coefficients, None, EmaOptions(bidirectional=False, truncation=None, return_state=False))
    reference, _ = reference_ema(x, coefficients, None, EmaOptions(bidirectional=False, truncation=None, return_state=False))
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, reference, **TOLERANCE)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_module_output_is_the_same_through_either_kernel(bidirectional: bool) -> None:
    torch.manual_seed(0)
    fast = MultiDimensionDampedEma(DIM, COMPONENTS, bidirectional=bidirectional, truncation=None, kernel_name="chunked_scan")
    fast.reset_parameters()
    reference = MultiDimensionDampedEma(DIM, COMPONENTS, bidirectional=bidirectional, truncation=None, kernel_name="reference")
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(BATCH, 150, DIM)
    key_mask = torch.ones(BATCH, 150, dtype=torch.bool)
    key_mask[0, :20] = False
    torch.testing.assert_close(fast(x, key_mask=key_mask)[0], reference(x, key_mask=key_mask)[0], **TOLERANCE)


@pytest.mark.parametrize("length", (CHUNK_STEPS, 3 * CHUNK_STEPS + 7))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_channel_major_input_matches_reference(length: int, bidirectional: bool) -> None:
    """The no-grad blocked layer hands the scan a (B, L, D) view of a (D, B, L) tensor (no copy inside)."""
    generator = torch.Generator().manual_seed(length)
    coefficients = random_coefficients(2 * DIM if bidirectional else DIM, generator=generator)
    x = torch.randn(BATCH, length, DIM, generator=generator)
    channel_major = x.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    assert not channel_major.is_contiguous()
    expected, _ = reference_ema(x, coefficients, None, EmaOptions(bidirectional=bidirectional, truncation=None, return_state=False))
    with torch.no_grad():
        got, _ = chunked_scan_ema(channel_major, coefficients, None, EmaOptions(bidirectional=bidirectional, truncation=None, return_state=False))
    torch.testing.assert_close(got, expected, **TOLERANCE)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_compiles_without_graph_breaks_with_the_same_gradients(bidirectional: bool) -> None:
    """Eager training makes the scan's gradient contiguous with a tensor hook; dynamo cannot trace a
    hook on an intermediate, so under compilation the kernel must leave it out (fullgraph)."""
    generator = torch.Generator().manual_seed(7)
    channels = 2 * DIM if bidirectional else DIM
    coefficients = random_coefficients(channels, generator=generator)
    x = torch.randn(BATCH, 3 * CHUNK_STEPS + 7, DIM, generator=generator)
    options = EmaOptions(bidirectional=bidirectional, truncation=None, return_state=False)
    upstream = torch.randn(x.shape, generator=generator)

    def loss(inputs: Tensor, input_gain: Tensor, decay: Tensor, output_gain: Tensor) -> Tensor:
        output, _ = chunked_scan_ema(inputs, EmaCoefficients(input_gain, decay, output_gain), None, options)
        return (output * upstream).sum()

    def gradients(run: object) -> list[Tensor]:
        gains = leaf_copies(coefficients)
        leaves = [x.clone().requires_grad_(True), gains.input_gain, gains.decay, gains.output_gain]
        run(*leaves).backward()  # type: ignore[operator]
        return [leaf.grad for leaf in leaves]

    torch._dynamo.reset()
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    for got, expected in zip(gradients(compiled), gradients(loss)):
        torch.testing.assert_close(got, expected, **TOLERANCE)
