"""The rotary bias cache (no-grad calls): same values as a fresh computation, never stale."""

from __future__ import annotations

import torch
from torch import Tensor

from mega_plugin.core.positional import MAX_CACHED_BIAS, RotaryRelativePositionalBias, rotate, sinusoids


def formula(module: RotaryRelativePositionalBias, query_length: int, key_length: int, offset: int) -> Tensor:
    """bias[i, j] = rot(alpha, offset + i) . rot(b, j), straight from the definition."""
    sin, cos = sinusoids(max(key_length, offset + query_length), module.dim, device=torch.device("cpu"), dtype=torch.float32)
    queries = rotate(module.alpha.detach(), sin[offset : offset + query_length], cos[offset : offset + query_length])
    keys = rotate(module.b_param.detach(), sin[:key_length], cos[:key_length])
    return torch.einsum("iz,jz->ij", queries, keys)



def fresh_module() -> RotaryRelativePositionalBias:
    torch.manual_seed(0)
    module = RotaryRelativePositionalBias(dim=8, init_std=0.5)
    module.reset_parameters()
    return module


def test_cached_calls_equal_the_formula_and_reuse_one_tensor() -> None:
    module = fresh_module()
    with torch.no_grad():
        first = module(6, 6, 0)
        again = module(6, 6, 0)
        other = module(3, 9, 2)
    torch.testing.assert_close(first, formula(module, 6, 6, 0))
    torch.testing.assert_close(other, formula(module, 3, 9, 2))
    assert again.data_ptr() == first.data_ptr()  # served from the cache
    assert other.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()  # one cached square


def test_decoding_windows_equal_the_formula_and_share_one_square() -> None:
    module = fresh_module()
    with torch.no_grad():
        steps = [module(1, k, k - 1) for k in range(1, 40)]
    for k, bias in zip(range(1, 40), steps):
        torch.testing.assert_close(bias, formula(module, 1, k, k - 1))
    assert len({bias.untyped_storage().data_ptr() for bias in steps[16:32]}) == 1  # one 32 x 32 square


def test_parameter_changes_are_never_served_stale() -> None:
    module = fresh_module()
    with torch.no_grad():
        before = module(5, 5, 0).clone()
        module.alpha.data.mul_(-2.0)  # through .data: the version counter does not move
        after_data = module(5, 5, 0)
    torch.testing.assert_close(after_data, formula(module, 5, 5, 0))
    assert not torch.allclose(after_data, before)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    module(5, 5, 0).square().sum().backward()
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(module(5, 5, 0), formula(module, 5, 5, 0))
    state = {k: torch.randn_like(v) for k, v in module.state_dict().items()}
    module.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(module(5, 5, 0), formula(module, 5, 5, 0))


def test_recording_calls_are_not_cached_and_carry_gradients() -> None:
    module = fresh_module()
    with torch.no_grad():
        module(4, 4, 0)
    bias = module(4, 4, 0)
    assert bias.requires_grad
    bias.sum().backward()
    assert module.alpha.grad is not None and module.b_param.grad is not None


def test_large_frames_are_not_kept() -> None:
    module = fresh_module()
    side = int(MAX_CACHED_BIAS**0.5) + 1
    with torch.no_grad():
        first = module(side, side, 0)
        assert module(side, side, 0).data_ptr() != first.data_ptr()
        small = module(4, 4, 0)
        assert module(4, 4, 0).data_ptr() == small.data_ptr()
