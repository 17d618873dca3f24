"""The chunked_scan EMA reuses its prepared weights across no-grad calls: never stale, never in autograd."""

from __future__ import annotations

import torch

from mega_plugin.backends.portable import ema_chunked_scan
from mega_plugin.backends.portable.ema_chunked_scan import chunked_scan_ema
from mega_plugin.core.ops import EmaOptions, EmaCoefficients, reference_ema

OPTIONS = EmaOptions(bidirectional=True, truncation=None, return_state=False)


def coefficients(seed: int) -> EmaCoefficients:
    generator = torch.Generator().manual_seed(seed)
    return EmaCoefficients(
        input_gain=torch.randn(6, 3, generator=generator),
        decay=0.05 + 0.9 * torch.rand(6, 3, generator=generator),
        output_gain=torch.randn(6, 3, generator=generator),
    )


def test_no_grad_calls_follow_changed_coefficients() -> None:
    x = torch.randn(2, 150, 3)
    first, second = coefficients(0), coefficients(1)
    with torch.no_grad():
        for chosen in (first, first, second, first):
            expected = reference_ema(x, chosen, None, OPTIONS)[0]
            torch.testing.assert_close(chunked_scan_ema(x, chosen, None, OPTIONS)[0], expected, atol=2e-5, rtol=1e-4)
        reused = ema_chunked_scan._cached_weights.entries[0]
        chunked_scan_ema(x, first, None, OPTIONS)
        assert ema_chunked_scan._cached_weights.entries[0] is reused  # same values: the weights were reused
        first.decay.mul_(0.5)  # in place: same tensor object, new values
        expected = reference_ema(x, first, None, OPTIONS)[0]
        torch.testing.assert_close(chunked_scan_ema(x, first, None, OPTIONS)[0], expected, atol=2e-5, rtol=1e-4)
        assert ema_chunked_scan._cached_weights.entries[0] is not reused


def test_layers_alternating_keep_their_weights() -> None:
    """Several layers (different coefficients) called in turn all hit the cache, up to its size."""
    x = torch.randn(1, 100, 3)
    layers = [coefficients(10 + i) for i in range(ema_chunked_scan.CACHED_WEIGHTS)]
    with torch.no_grad():
        for chosen in layers:
            chunked_scan_ema(x, chosen, None, OPTIONS)
        entries = {id(entry) for entry in ema_chunked_scan._cached_weights.entries}
        for chosen in layers:  # a second forward: every layer finds its weights
            expected = reference_ema(x, chosen, None, OPTIONS)[0]
            torch.testing.assert_close(chunked_scan_ema(x, chosen, None, OPTIONS)[0], expected, atol=2e-5, rtol=1e-4)
        assert {id(entry) for entry in ema_chunked_scan._cached_weights.entries} == entries
        assert len(entries) == ema_chunked_scan.CACHED_WEIGHTS


def test_recording_calls_differentiate_through_fresh_weights() -> None:
    x = torch.randn(1, 70, 3)
    base = coefficients(2)
    leaves = EmaCoefficients(
        *(t.clone().requires_grad_(True) for t in (base.input_gain, base.decay, base.output_gain))
    )
    with torch.no_grad():
        chunked_scan_ema(x, leaves, None, OPTIONS)  # fills the cache with these values
    chunked_scan_ema(x, leaves, None, OPTIONS)[0].sum().backward()
    for leaf in (leaves.input_gain, leaves.decay, leaves.output_gain):
        assert leaf.grad is not None and bool(leaf.grad.abs().sum() > 0)
