"""The kernel ops of the core: typed calls, the registry that chooses kernels, the reference kernels.

Layers never call a kernel directly: they describe the call and run what :func:`select`
chose (:func:`run_ema`, :func:`run_attention`). The reference kernels are registered here, so
the core works on its own; faster kernels come from backends (``mega_plugin.backends``) and
plugins through the ``mega_plugin_register_kernels`` hook. Plugin kernels run behind the
call-time guard (:mod:`.guard`); the built-in ones are called directly.
"""

from __future__ import annotations

from typing import Final

from torch import Tensor

from ..tracing import capturing_graph
from .attention.reference import reference_attention
from .calls import (
    SUPPORTED,
    AttentionCall,
    AttentionOptions,
    EmaCall,
    EmaCoefficients,
    EmaOptions,
    Rejected,
    Support,
    declined,
)
from .conventions import SIGNATURES, KernelError, adapt_kernel
from .ema.reference import reference_ema
from .guard import GuardedKernel, KernelGuardWarning, guard_kernel, guarded_kernel
from .registry import (
    AUTO,
    OPS,
    REFERENCE,
    KernelSpec,
    as_support,
    forget_choices,
    is_registered,
    kernels,
    reference_kernel,
    register_kernel,
    registered_kernels,
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
    x: Tensor, coefficients: EmaCoefficients, initial_state: Tensor | None, options: EmaOptions, *, kernel: str
) -> tuple[Tensor, Tensor | None]:
    """The EMA of ``x`` (B, L, D) by the kernel chosen for this call: (y (B, L, D) fp32, state or None).

    Empty inputs (no sequence, or length 0) and captured graphs go to the reference kernel.
    """
    if x.numel() == 0 or capturing_graph():
        return reference_kernel("ema").fn(x, coefficients, initial_state, options)
    call = EmaCall(
        bidirectional=options.bidirectional,
        truncation=options.truncation,
        length=x.shape[1],
        has_state=initial_state is not None or options.return_state,
        dtype=x.dtype,
        device=x.device,
    )
    return select("ema", kernel, call).fn(x, coefficients, initial_state, options)


def run_attention(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, key_mask: Tensor | None, options: AttentionOptions,
    *,
    kernel: str,
) -> tuple[Tensor, Tensor | None]:
    """Attention of ``query`` (B, C, Lq, Z) over ``key``/``value`` by the kernel chosen for this call.

    Empty inputs and captured graphs go to the reference kernel.
    """
    kernel_bias = None if bias is None else bias.to(query.dtype)
    if query.numel() == 0 or key.numel() == 0 or capturing_graph():
        return reference_kernel("attention").fn(query, key, value, kernel_bias, key_mask, options)
    call = AttentionCall(
        activation=options.activation,
        causal=options.causal,
        query_length=query.shape[-2],
        key_length=key.shape[-2],
        num_chunks=query.shape[1],
        need_weights=options.need_weights,
        has_key_mask=key_mask is not None,
        dropout_p=options.dropout_p,
        dtype=query.dtype,
        device=query.device,
    )
    return select("attention", kernel, call).fn(query, key, value, kernel_bias, key_mask, options)


__all__ = [
    "AUTO",
    "OPS",
    "REFERENCE",
    "REFERENCE_ATTENTION",
    "REFERENCE_EMA",
    "SUPPORTED",
    "SIGNATURES",
    "AttentionCall",
    "AttentionOptions",
    "EmaCall",
    "EmaCoefficients",
    "EmaOptions",
    "GuardedKernel",
    "KernelError",
    "KernelGuardWarning",
    "KernelSpec",
    "Rejected",
    "Support",
    "adapt_kernel",
    "as_support",
    "declined",
    "forget_choices",
    "guard_kernel",
    "guarded_kernel",
    "is_registered",
    "kernels",
    "reference_attention",
    "reference_ema",
    "reference_kernel",
    "register_kernel",
    "registered_kernels",
    "registry_version",
    "run_attention",
    "run_ema",
    "select",
    "set_discovery",
    "unregister_kernel",
]
