"""fp32 GEMMs through oneDNN on CPU: ``a @ b.T (+ bias)`` with autograd.

Why: on CPUs that are not Intel's, the MKL ``sgemm`` behind ``torch.mm`` / ``F.linear`` runs
its AVX2 code even where AVX-512 exists. On the 2-core AMD EPYC (Zen 5) of the benchmark
machine it reaches 190-215 GFLOP/s for the MEGA shapes, while oneDNN's JIT kernels, which
pick the instruction set from CPUID, reach 340-460 GFLOP/s on the same shapes in IEEE fp32
(relative difference ~5e-7, summation order only). torch reaches oneDNN's fp32 matmul only
through ``torch.ops.mkldnn._linear_pointwise`` (the op inductor uses), which has no autograd
formula; :class:`MatmulNT` adds one.

``_linear_pointwise(input, weight, bias)`` computes ``input @ weight.T + bias`` and reads
strided (e.g. transposed) operands as they lie, so ``a @ b`` is ``nt(a, b.t())`` without a copy.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import Tensor

from ...core.memo import records_grad
from ...core.ops import SUPPORTED, Support, declined
from ...core.tracing import capturing_graph

_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def _linear_pointwise(a: Tensor, b: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def _linear_pointwise_add(a: Tensor, b: Tensor, addend: Tensor) -> Tensor:
    # oneDNN's binary post-op: the addend is read while the GEMM's output tile is still in registers
    return torch.ops.mkldnn._linear_pointwise.binary(a, addend, b, None, "add")


def _probe(name: str, run: Callable[[Tensor, Tensor, Tensor], Tensor], *, addend_shape: tuple[int, ...]) -> Support:
    """Whether ``run(a, b, addend)``, meant as ``a @ b.T + addend``, agrees with ``torch.addmm`` on small inputs.

    ``b`` is a transposed view, read as the kernels read their operands. Explicit device and
    dtype: the first probe may run under a default-device context (meta-device model
    construction) or a default-dtype one.
    """
    try:
        generator = torch.Generator(device="cpu").manual_seed(0)
        cpu = {"generator": generator, "device": "cpu", "dtype": torch.float32}
        a = torch.randn(5, 7, **cpu)
        b = torch.randn(7, 3, **cpu).t()
        addend = torch.randn(*addend_shape, **cpu)
        got = run(a, b, addend)
    except Exception as error:  # any failure of a private op means: do not use it
        return declined(f"{name} failed on a probe ({type(error).__name__}: {error})")
    expected = torch.addmm(addend, a, b.t())
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-5, atol=1e-5):
        return declined(f"{name} disagrees with torch.addmm on a probe")
    return SUPPORTED


@functools.lru_cache(maxsize=None)
def onednn_available() -> Support:
    """Whether oneDNN fp32 GEMMs work here: probed once per process against ``torch.addmm``."""
    if not torch.backends.mkldnn.is_available():
        return declined("torch was built without oneDNN (mkldnn)")
    try:
        torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError) as error:
        return declined(f"torch.ops.mkldnn._linear_pointwise is missing ({error})")
    return _probe("torch.ops.mkldnn._linear_pointwise", _linear_pointwise, addend_shape=(3,))


@functools.lru_cache(maxsize=None)
def fused_add_available() -> Support:
    """Whether oneDNN's GEMM with an elementwise-add post-op works: probed once per process."""
    plain = onednn_available()
    if not plain.ok:
        return plain
    return _probe("torch.ops.mkldnn._linear_pointwise.binary", _linear_pointwise_add, addend_shape=(5, 3))


def unsupported_tensor(tensor: Tensor | None) -> str | None:
    """Why ``tensor`` cannot go through oneDNN's fp32 GEMM, or ``None`` if it can."""
    if tensor is None:
        return None
    if type(tensor) not in _PLAIN_TYPES:
        return f"tensor type {type(tensor).__name__} (subclasses keep their own dispatch)"
    if tensor.device.type != "cpu":
        return f"device {tensor.device}: oneDNN serves CPU tensors"
    if tensor.dtype != torch.float32:
        return f"dtype {tensor.dtype}: only float32 (other dtypes keep torch's own kernels)"
    if 0 in tensor.shape:
        return "an empty operand"
    if any(stride == 0 and size > 1 for stride, size in zip(tensor.stride(), tensor.shape)):
        return "a broadcast (stride-0) operand"
    return None


def _functorch_active() -> bool:
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active()) if active is not None else False


def _forward_ad_active() -> bool:
    # torch.autograd.forward_ad keeps the innermost open dual level here (-1: none open)
    return getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0


def serves(device: torch.device, dtype: torch.dtype) -> Support:
    """Whether oneDNN's fp32 GEMM serves tensors of this device and dtype (fixed per call signature)."""
    if device.type != "cpu":
        return declined(f"device {device}: oneDNN serves CPU tensors")
    if dtype != torch.float32:
        return declined(f"dtype {dtype}: only float32")
    return onednn_available()


def context_allows() -> Support:
    """Whether the current context lets a call use oneDNN (checked per call: it can change any time).

    Autocast, tracing, compilation, ``torch.func`` transforms and forward-mode AD keep torch's
    own ops, so that they see (and cast, trace, fuse, batch or differentiate) a plain matmul;
    ``torch.backends.mkldnn.flags(enabled=False)`` turns oneDNN off.
    """
    if not torch.backends.mkldnn.enabled:
        return declined("oneDNN is disabled (torch.backends.mkldnn.enabled is False)")
    if torch.is_autocast_enabled("cpu"):
        return declined("CPU autocast is on: torch's matmul casts to the autocast dtype")
    if capturing_graph():
        return declined("tracing or compiling: torch's own matmul is what the compiler should see")
    if _functorch_active():
        return declined("a torch.func transform (vmap, grad, jacrev, ...) is active: torch's ops carry its rules")
    if _forward_ad_active():
        return declined("a forward-mode AD dual level is open: torch's ops carry the forward derivatives")
    return SUPPORTED


def matmul_nt(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a @ b.T (+ bias)`` for 2-d ``a`` (M, K) and ``b`` (N, K): (M, N), differentiable.

    The caller has checked :func:`serves`, :func:`context_allows` and :func:`unsupported_tensor`.
    """
    if records_grad((a, b, bias)):
        return MatmulNT.apply(a, b, bias)
    return _linear_pointwise(a, b, bias)


def matmul_nt_add(a: Tensor, b: Tensor, addend: Tensor) -> Tensor:
    """``a @ b.T + addend`` for 2-d ``a`` (M, K), ``b`` (N, K) and a contiguous ``addend`` (M, N), without autograd.

    One pass: the addend joins each output tile in the GEMM (oneDNN's binary post-op) instead
    of a second sweep over (M, N). The caller has checked :func:`fused_add_available` and
    :func:`unsupported_tensor` for all three, and that nothing records a gradient.
    """
    return _linear_pointwise_add(a, b, addend)


def _weight_gradient(grad: Tensor, a: Tensor) -> Tensor:
    """``grad.T @ a`` (N, K) for ``grad`` (M, N) and ``a`` (M, K), through the smaller copy.

    oneDNN reads its weight operand strided but copies a non-contiguous first operand. ``grad.T``
    as that operand copies (N, M); ``a.T`` copies (K, M) (nothing when ``a`` is itself a
    transposed view) and gives the transpose of the result, which a parameter's gradient then
    copies once more, (N, K). At the MEGA projections (M rows >> N, K) the second is about half.
    """
    rows, outputs = grad.shape
    inputs = a.shape[1]
    through_grad = 0 if grad.t().is_contiguous() else rows * outputs
    through_a = (0 if a.t().is_contiguous() else rows * inputs) + outputs * inputs
    if through_a < through_grad:
        return _linear_pointwise(a.t(), grad.t(), None).t()
    return _linear_pointwise(grad.t(), a.t(), None)


class MatmulNT(torch.autograd.Function):
    """``a @ b.T + bias`` whose forward and backward GEMMs run in oneDNN.

    The backward GEMMs read ``b``, ``a`` and the upstream gradient transposed, as they lie.
    Under ``create_graph`` (double backward) the backward is written in torch ops instead,
    so that it is itself differentiable.
    """

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(a, b)
        ctx.has_bias = bias is not None
        return _linear_pointwise(a, b, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        a, b = ctx.saved_tensors
        need_a, need_b, need_bias = ctx.needs_input_grad
        grad_a = grad_b = grad_bias = None
        differentiable = torch.is_grad_enabled()
        if not differentiable and unsupported_tensor(grad) is not None:
            grad = grad.contiguous()
        if need_a:  # (M, N) @ (N, K)
            grad_a = grad @ b if differentiable else _linear_pointwise(grad, b.t(), None)
        if need_b:  # (N, M) @ (M, K)
            grad_b = grad.t() @ a if differentiable else _weight_gradient(grad, a)
        if need_bias and ctx.has_bias:
            grad_bias = grad.sum(dim=0)
        return grad_a, grad_b, grad_bias
