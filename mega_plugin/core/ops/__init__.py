"""The kernel ops of the core: typed calls, the registry that chooses kernels, the reference kernels.

Layers never call a kernel directly: they describe the call and run what :func:`select`
chose (:func:`run_ema`, :func:`run_attention`). The reference kernels are registered here, so
the core works on its own; faster kernels come from backends (``mega_plugin.backends``) and
plugins through the ``mega_plugin_register_kernels`` hook.
"""

from __future__ import annotations

from typing import Final

from torch import Tensor

from .attention.reference import reference_attention
from .calls import (
    SUPPORTED,
    AttentionCall,
    EmaCall,
    EmaCoefficients,
    Support,
    declined,
)
from .ema.reference import reference_ema
from .registry import (
    AUTO,
    OPS,
    REFERENCE,
    KernelError,
    KernelSpec,
    as_support,
    check_kernel_signature,
    is_registered,
    kernels,
    register_kernel,
    registry_version,
    select,
    set_discovery,
    unregister_kernel,
)

REFERENCE_EMA: Final = KernelSpec(
    name=REFERENCE,
    op="ema",
    fn=reference_ema,
    description="FFT convolution in fp32 with exact streaming-state algebra (the ground truth)",
)
REFERENCE_ATTENTION: Final = KernelSpec(
    name=REFERENCE,
    op="attention",
    fn=reference_attention,
    description="matmul-mask-normalise-matmul for softmax, laplace and relu2 (the ground truth)",
)
for _spec in (REFERENCE_EMA, REFERENCE_ATTENTION):
    register_kernel(_spec)


def run_ema(
    x: Tensor,
    coefficients: EmaCoefficients,
    *,
    kernel: str,
    bidirectional: bool,
    truncation: int | None,
    initial_state: Tensor | None,
    return_state: bool,
) -> tuple[Tensor, Tensor | None]:
    """The EMA of ``x`` (B, L, D) by the kernel chosen for this call: (y (B, L, D) fp32, state or None)."""
    call = EmaCall(
        bidirectional=bidirectional,
        truncation=truncation,
        length=x.shape[1],
        has_state=initial_state is not None or return_state,
        dtype=x.dtype,
        device=x.device,
    )
    return select("ema", kernel, call).fn(
        x,
        coefficients,
        bidirectional=bidirectional,
        truncation=truncation,
        initial_state=initial_state,
        return_state=return_state,
    )


def run_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    bias: Tensor | None,
    key_mask: Tensor | None,
    *,
    kernel: str,
    activation: str,
    causal: bool,
    query_offset: int,
    scale: float,
    dropout_p: float,
    training: bool,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """Attention of ``query`` (B, C, Lq, Z) over ``key``/``value`` by the kernel chosen for this call."""
    call = AttentionCall(
        activation=activation,
        causal=causal,
        query_length=query.shape[-2],
        key_length=key.shape[-2],
        num_chunks=query.shape[1],
        need_weights=need_weights,
        has_key_mask=key_mask is not None,
        dropout_p=dropout_p,
        dtype=query.dtype,
        device=query.device,
    )
    return select("attention", kernel, call).fn(
        query,
        key,
        value,
        None if bias is None else bias.to(query.dtype),
        key_mask,
        activation=activation,
        causal=causal,
        query_offset=query_offset,
        scale=scale,
        dropout_p=dropout_p,
        training=training,
        need_weights=need_weights,
    )


__all__ = [
    "AUTO",
    "OPS",
    "REFERENCE",
    "REFERENCE_ATTENTION",
    "REFERENCE_EMA",
    "SUPPORTED",
    "AttentionCall",
    "EmaCall",
    "EmaCoefficients",
    "KernelError",
    "KernelSpec",
    "Support",
    "as_support",
    "check_kernel_signature",
    "declined",
    "is_registered",
    "kernels",
    "reference_attention",
    "reference_ema",
    "register_kernel",
    "registry_version",
    "run_attention",
    "run_ema",
    "select",
    "set_discovery",
    "unregister_kernel",
]
