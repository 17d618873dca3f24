"""One attention call through the kernel registry, shared by the self- and the cross-attention.

The registry picks a kernel per call from what the call needs (see ``kernels/registry.py``);
this module describes the call and runs the chosen kernel, so both attention modules ask the
registry the same questions.
"""

from __future__ import annotations

from torch import Tensor

from .kernels import resolve_kernel


def dispatch_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    bias: Tensor,
    key_mask: Tensor | None,
    *,
    kernel_name: str,
    activation: str,
    causal: bool,
    query_offset: int,
    scale: float,
    dropout_p: float,
    training: bool,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """Attention of ``query`` (B, C, Lq, Z) over ``key`` (B, C, Lk, Z) / ``value`` (B, C, Lk, V).

    ``bias`` is the (Lq, Lk) relative bias, ``key_mask`` (B, C, Lk) bool marks real keys (None:
    all real), ``query_offset`` is the position of the first query within the keys (causal
    masks of cached steps). ``dropout_p`` is the attention dropout to apply now (0 in eval).
    Returns the attended values (B, C, Lq, V) and, when asked for, the weights (B, C, Lq, Lk).
    """
    call = {
        "activation": activation,
        "causal": causal,
        "query_length": query.shape[-2],
        "key_length": key.shape[-2],
        "num_chunks": query.shape[1],
        "need_weights": need_weights,
        "has_key_mask": key_mask is not None,
        "dropout_p": dropout_p,
        "dtype": query.dtype,
        "device": query.device,
    }
    kernel = resolve_kernel("attention", kernel_name, call)
    return kernel.fn(
        query,
        key,
        value,
        bias.to(query.dtype),
        key_mask,
        activation=activation,
        causal=causal,
        query_offset=query_offset,
        scale=scale,
        dropout_p=dropout_p,
        training=training,
        need_weights=need_weights,
    )
