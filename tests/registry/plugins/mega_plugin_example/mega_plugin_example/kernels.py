"""Two kernels for mega-plugin, written from the op conventions alone (tensors, then the options).

Their ``supports`` read the call like a mapping and answer ``None`` or a reason, as plugins of
earlier releases did: the registry accepts both.

``block_scan_ema``: the causal damped EMA computed block by block. Inside a block of T steps
the output is a T x T lower-triangular Toeplitz product with the impulse response
``k[l] = sum_n gain * q**l * out``; between blocks only the (B, D, N) state is carried:
``y_t += sum_n out * q**(t+1) * h`` and ``h <- sum_s gain * q**(t-1-s) * x_s + q**t * h``.
Memory is O(T^2 D) instead of the FFT's O(L D); the result equals the FFT convolution.

``sdpa_attention``: softmax attention through ``torch.nn.functional.scaled_dot_product_attention``
with the relative bias and the masks folded into one additive mask.
"""

from __future__ import annotations

from typing import Any, Final, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK: Final = 16


def block_scan_ema(
    x: Tensor, coefficients: Any, initial_state: Tensor | None, options: Any
) -> tuple[Tensor, Tensor | None]:
    """Causal EMA by blocks of 16 steps with a carried state (no FFT)."""
    if options.bidirectional or options.truncation is not None:
        raise ValueError("block_scan_ema computes the causal, untruncated EMA only")
    batch, length, dim = x.shape
    gain = coefficients.input_gain.float()  # (D, N)
    out_gain = coefficients.output_gain.float()  # (D, N)
    log_decay = torch.log(coefficients.decay.float())  # (D, N)
    steps = torch.arange(BLOCK + 1, device=x.device, dtype=torch.float32)
    powers = torch.exp(steps.view(1, 1, -1) * log_decay.unsqueeze(-1))  # (D, N, T + 1): q**0 .. q**T
    impulse = torch.einsum("dn,dnl->dl", gain * out_gain, powers[..., :BLOCK])  # (D, T)
    lag = torch.arange(BLOCK, device=x.device).view(-1, 1) - torch.arange(BLOCK, device=x.device).view(1, -1)
    toeplitz = impulse[:, lag.clamp(min=0)] * (lag >= 0)  # (D, T, T): k[t - s] for s <= t
    if initial_state is not None:
        state = initial_state.float()
    else:
        state = x.new_zeros(batch, dim, gain.shape[-1], dtype=torch.float32)
    outputs = []
    for start in range(0, length, BLOCK):
        block = x[:, start : start + BLOCK].float()  # (B, t, D)
        size = block.shape[1]
        y = torch.einsum("dts,bsd->btd", toeplitz[:, :size, :size], block)
        y = y + torch.einsum("bdn,dnt->btd", state * out_gain, powers[..., 1 : size + 1])
        to_end = powers[..., :size].flip(-1)  # q**(size-1-s) for s = 0 .. size-1
        state = torch.einsum("bsd,dns->bdn", block, to_end) * gain + state * powers[..., size]
        outputs.append(y)
    output = torch.cat(outputs, dim=1) if outputs else x.new_zeros(batch, 0, dim, dtype=torch.float32)
    return output, (state if options.return_state else None)


def block_scan_supports(call: Mapping[str, Any]) -> str | None:
    """Decline what the block scan does not implement."""
    if call.get("bidirectional"):
        return "bidirectional EMA is not implemented by example_scan"
    if call.get("truncation") is not None:
        return "a truncated EMA kernel is not implemented by example_scan"
    return None


def sdpa_attention(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, key_mask: Tensor | None, options: Any
) -> tuple[Tensor, Tensor | None]:
    """Softmax attention through torch's scaled_dot_product_attention."""
    if options.activation != "softmax" or options.need_weights:
        raise ValueError("sdpa_attention serves softmax attention without returned weights only")
    query_length, key_length = query.shape[-2], key.shape[-2]
    allowed = None  # (B|1, C|1, Lq, Lk) bool
    if key_mask is not None:
        key_mask = key_mask | ~key_mask.any(dim=-1, keepdim=True)  # an all-padding chunk stays visible
        allowed = key_mask.unsqueeze(-2)
    if options.causal:
        rows = torch.arange(query_length, device=query.device).view(-1, 1) + options.query_offset
        order = torch.arange(key_length, device=query.device).view(1, -1) <= rows
        allowed = order if allowed is None else allowed & order
    mask = query.new_zeros(query_length, key_length) if bias is None else bias.to(query.dtype)
    visible = None
    if allowed is not None:
        visible = allowed.any(dim=-1, keepdim=True)  # rows that see no key get zeros, not NaN
        blocked = torch.full((), float("-inf"), dtype=query.dtype, device=query.device)
        mask = mask + torch.where(allowed | ~visible, torch.zeros((), dtype=query.dtype, device=query.device), blocked)
    output = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=options.dropout_p if options.training else 0.0, scale=options.scale
    )
    if visible is not None:
        output = output * visible.to(output.dtype)
    return output, None


def sdpa_supports(call: Mapping[str, Any]) -> str | None:
    """Decline element attention and calls that want the weights back."""
    if call.get("activation") != "softmax":
        return f"example_sdpa serves softmax only, not {call.get('activation')!r}"
    if call.get("need_weights"):
        return "example_sdpa does not return attention weights"
    return None
