"""Relative position biases: the learned ``simple`` table and the ``rotary`` bias.

Both produce an additive (Lq, Lk) bias for queries at key-frame positions
``query_offset .. query_offset + Lq - 1`` against keys at ``0 .. Lk - 1``; both depend only
on ``key_position - query_position``.
"""

from __future__ import annotations

import math
from typing import Final

import torch
from torch import Tensor, nn

from .config import MegaCoreConfig
from .memo import ValueKeyedCache, records_grad
from .tracing import capturing_graph

MAX_CACHED_BIAS: Final = 1 << 22
"""Largest rotary bias kept between calls (elements, 16 MiB in fp32): chunk biases and
unchunked frames up to 2048; a longer unchunked bias would pin L x L memory per layer."""


class SimpleRelativePositionalBias(nn.Module):
    """A learned scalar per lag: ``bias[i, j] = table[center - 1 + (j - i)]``.

    The HF layout sizes the table by ``max_positions`` (2 * max_positions - 1 entries) but
    centres it on ``chunk_size`` whenever ``chunk_size > 0``; we keep that layout so HF
    checkpoints read the same entries. Frames longer than ``center`` cannot be biased.
    """

    def __init__(self, *, max_positions: int, center: int, init_std: float) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.center = center
        self.init_std = init_std
        self.rel_pos_bias = nn.Parameter(torch.zeros(2 * max_positions - 1))

    def reset_parameters(self) -> None:
        nn.init.normal_(self.rel_pos_bias, mean=0.0, std=self.init_std)

    def forward(self, query_length: int, key_length: int, query_offset: int = 0) -> Tensor:
        if key_length > self.center:
            raise ValueError(
                f"sequence length {key_length} exceeds what relative_positional_bias='simple' supports "
                f"({self.center}, set by {'chunk_size' if self.center != self.max_positions else 'max_positions'}); "
                "use chunking, a larger max_positions, or relative_positional_bias='rotary'"
            )
        device = self.rel_pos_bias.device
        query_positions = torch.arange(query_length, device=device).unsqueeze(1) + query_offset
        key_positions = torch.arange(key_length, device=device).unsqueeze(0)
        return self.rel_pos_bias[self.center - 1 + key_positions - query_positions]

    def extra_repr(self) -> str:
        return f"max_positions={self.max_positions}, center={self.center}"


def _square_side(size: int) -> int:
    """The side of the cached square bias that holds a frame of ``size``: the next power of
    two (at least 16), so a growing decoding frame reuses one square instead of one per length."""
    return max(16, 1 << (size - 1).bit_length())


def sinusoids(length: int, dim: int, *, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(sin, cos), each (length, dim // 2), at base 10000 over dim // 2 frequencies."""
    half = dim // 2
    step = math.log(10000.0) / half
    frequencies = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -step)
    angles = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1) * frequencies.unsqueeze(0)
    return torch.sin(angles).to(dtype), torch.cos(angles).to(dtype)


def rotate(vector: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate a (1, Z) vector to every position of (L, Z/2) tables: (L, Z)."""
    first, second = torch.chunk(vector, 2, dim=-1)
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


class RotaryRelativePositionalBias(nn.Module):
    """``bias[i, j] = rot(alpha, i) . rot(b_param, j)``: extrapolates to any length."""

    def __init__(self, *, dim: int, init_std: float) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"relative_positional_bias='rotary' needs an even shared_representation_size, got {dim}")
        self.dim = dim
        self.init_std = init_std
        self.alpha = nn.Parameter(torch.zeros(1, dim))
        self.b_param = nn.Parameter(torch.zeros(1, dim))
        # Kept only for checkpoint compatibility: HF MEGA checkpoints store this buffer.
        self.register_buffer("_float_tensor", torch.zeros(1), persistent=True)
        # One cached square bias for calls that record no gradient (every layer, block, forward
        # and decoding step reads a window of the same square): the key holds copies of the
        # parameter values, so any change to them (optimizer step, load_state_dict, in-place
        # init through ``.data``) misses.
        self._cache: ValueKeyedCache[Tensor] = ValueKeyedCache(capacity=1)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.alpha, mean=0.0, std=self.init_std)
        nn.init.normal_(self.b_param, mean=0.0, std=self.init_std)
        # the unused checkpoint placeholder is garbage after a meta-device ``to_empty``
        self._float_tensor.zero_()

    def forward(self, query_length: int, key_length: int, query_offset: int = 0) -> Tensor:
        recording = records_grad((self.alpha, self.b_param))
        side = _square_side(max(key_length, query_offset + query_length))
        # a captured graph computes the bias: the cache compares parameter values, and a hit
        # would bake the remembered square into the graph as a constant
        if recording or side * side > MAX_CACHED_BIAS or capturing_graph():
            return self._compute(query_length, key_length, query_offset)
        square = self._cache.get(side, (self.alpha, self.b_param))
        if square is None:
            square = self._compute(side, side, 0)
            self._cache.put(side, (self.alpha, self.b_param), square)
        # Every window lies inside one cached square (the bias depends on absolute frame
        # positions only): a decoding step, 1 query at offset k - 1 against k keys, is a slice
        # of it instead of a fresh bias per layer and per token.
        return square[query_offset : query_offset + query_length, :key_length]

    def _compute(self, query_length: int, key_length: int, query_offset: int) -> Tensor:
        sin, cos = sinusoids(
            max(key_length, query_offset + query_length), self.dim, device=self.alpha.device, dtype=self.alpha.dtype
        )
        queries = rotate(self.alpha, sin[query_offset : query_offset + query_length], cos[query_offset : query_offset + query_length])
        keys = rotate(self.b_param, sin[:key_length], cos[:key_length])
        return queries @ keys.transpose(0, 1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def relative_positional_bias(
    config: MegaCoreConfig, *, positions: int | None = None
) -> SimpleRelativePositionalBias | RotaryRelativePositionalBias:
    """The ``rel_pos_bias`` module ``config.relative_positional_bias`` names (self- and cross-attention).

    ``positions`` sizes and centres a simple table on its own (the cross-attention's
    ``cross_attention_max_positions``); by default it follows ``max_positions`` and the chunking.
    """
    if config.relative_positional_bias == "simple":
        if positions is not None:
            return SimpleRelativePositionalBias(max_positions=positions, center=positions, init_std=config.initializer_range)
        return SimpleRelativePositionalBias(
            max_positions=config.max_positions, center=config.simple_bias_center, init_std=config.initializer_range
        )
    return RotaryRelativePositionalBias(dim=config.shared_representation_size, init_std=config.initializer_range)
