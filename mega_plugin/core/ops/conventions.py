"""How the core calls a kernel of each op, and the shim for kernels of the earlier convention.

Tensors come positionally, then one frozen options object (:mod:`.calls`)::

    ema:       fn(x, coefficients, initial_state, options: EmaOptions)
               x (B, L, D), zero at padded positions; coefficients: EmaCoefficients, each (K, N),
               K = 2D when bidirectional (forward rows first); initial_state (B, D, N) or None;
               -> (y (B, L, D) float32, final state (B, D, N) when options.return_state, else None)

    attention: fn(query, key, value, bias, key_mask, options: AttentionOptions)
               query (B, C, Lq, Z), key (B, C, Lk, Z), value (B, C, Lk, V): C frames (chunks);
               bias (Lq, Lk) or None; key_mask (B, C, Lk) bool (True: real key) or None;
               causal: query i sees key j only if j <= options.query_offset + i;
               -> (output (B, C, Lq, V), weights (B, C, Lq, Lk) before dropout, or None)

Element attention (laplace, relu2) divides ``q.k`` by the number of keys each query may see
(at least 1) before adding the bias, and multiplies the weights by the mask.

Kernels written for the keyword convention of earlier releases (``fn(x, coefficients, *,
bidirectional, truncation, initial_state, return_state)``, ``fn(query, key, value, bias,
key_mask, *, activation, causal, query_offset, scale, dropout_p, training, need_weights)``) are
still accepted: :func:`adapt_kernel` wraps them and warns (``DeprecationWarning``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from typing import TYPE_CHECKING, Any, Callable, Final

if TYPE_CHECKING:
    from .kernel_spec import KernelSpec

SIGNATURES: Final[dict[str, tuple[str, ...]]] = {
    "ema": ("x", "coefficients", "initial_state", "options"),
    "attention": ("query", "key", "value", "bias", "key_mask", "options"),
}
"""Per op: the parameters every kernel takes, in order."""

LEGACY_SIGNATURES: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "ema": (("x", "coefficients"), ("bidirectional", "truncation", "initial_state", "return_state")),
    "attention": (
        ("query", "key", "value", "bias", "key_mask"),
        ("activation", "causal", "query_offset", "scale", "dropout_p", "training", "need_weights"),
    ),
}
"""The keyword convention of earlier releases: (positional, keyword-only) parameters."""

REMOVED_OPS: Final = {
    "linear": "projections are nn.Linear modules called as modules; a faster GEMM comes in through a "
    "backend that swaps them (hook mega_plugin_register_backends, see docs/plugins.md)",
}
"""Ops kernels could once be registered for, and where that moved."""


class KernelError(ValueError):
    """A kernel was asked for by a name that does not exist, cannot serve the call, or cannot take it."""


def _binds(fn: Callable[..., Any], positional: tuple[str, ...], keywords: tuple[str, ...] = ()) -> str | None:
    """None when ``fn`` can be called with these parameters, else why not."""
    try:
        inspect.signature(fn).bind(*positional, **dict.fromkeys(keywords))
    except TypeError as error:
        return str(error)
    return None


def _legacy_adapter(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` of the keyword convention, called the current way."""
    positional, keywords = LEGACY_SIGNATURES[op]

    @functools.wraps(fn)
    def adapted(*args: Any) -> Any:
        *tensors, options = args
        values = {name: getattr(options, name) for name in keywords if name != "initial_state"}
        if op == "ema":
            values["initial_state"] = tensors[2]
        return fn(*tensors[: len(positional)], **values)

    return adapted


def adapt_kernel(spec: KernelSpec) -> KernelSpec:
    """``spec`` ready to be called by its op; ``KernelError`` when ``spec.fn`` takes neither convention."""
    if spec.op in REMOVED_OPS:
        raise KernelError(f"kernel {spec.name!r}: op={spec.op!r} no longer exists: {REMOVED_OPS[spec.op]}")
    if spec.op not in SIGNATURES:
        raise KernelError(f"kernel {spec.name!r}: op={spec.op!r} is unknown; allowed values: {', '.join(SIGNATURES)}")
    try:
        inspect.signature(spec.fn)
    except (TypeError, ValueError) as error:
        raise KernelError(f"kernel {spec.op}/{spec.name}: cannot inspect its signature ({error})") from error
    problem = _binds(spec.fn, SIGNATURES[spec.op])
    if problem is None:
        return spec
    if _binds(spec.fn, *LEGACY_SIGNATURES[spec.op]) is None:
        warnings.warn(
            f"kernel {spec.op}/{spec.name} takes the keyword calling convention of earlier releases; "
            f"take fn({', '.join(SIGNATURES[spec.op])}) instead (see mega_plugin.core.ops.conventions)",
            DeprecationWarning,
            stacklevel=3,
        )
        return dataclasses.replace(spec, fn=_legacy_adapter(spec.op, spec.fn))
    call = f"fn({', '.join(SIGNATURES[spec.op])})"
    raise KernelError(f"kernel {spec.op}/{spec.name}: cannot be called as {call}: {problem}")
