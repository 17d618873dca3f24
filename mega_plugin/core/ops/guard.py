"""The call-time guard of plugin kernels: each kernel proves itself once per call signature.

Kernels of installed plugins are registered wrapped in a :class:`GuardedKernel` (the plugin
registry does it; the built-in reference, portable and cpu_fast kernels are trusted and never
wrapped, so the default path has no check at all). A call's signature (:func:`signature`) is
what may send a kernel down another path: dtype, device, the options, and the sizes that
matter (one step / one query, queries == keys, several chunks, a key mask, a state), never the
lengths themselves.

* The first call of a signature (the proving call) checks the outputs' structure, shapes and
  dtypes against what the call requires (:func:`output_problem`, derived from the inputs), then
  runs the reference kernel once and compares finiteness: NaN or inf where the reference is
  finite fails. Passing makes the signature proven: later calls are a set lookup and the kernel.
* A failed check, or an exception from the kernel at any call, gives one
  :class:`KernelGuardWarning` naming the plugin, the kernel and what was wrong, returns the
  reference kernel's result and rejects the kernel for the signature: its ``supports(call)``
  answers :class:`~.calls.Rejected` from then on, so ``auto`` goes straight to the next kernel
  and a kernel named in the config is replaced by the reference.
* Under graph capture the ops run the reference kernel and never reach a guarded kernel; a
  guarded kernel called directly then runs without checks (no value read breaks the graph).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Final, Hashable

import torch
from torch import Tensor

from ..tracing import capturing_graph
from .calls import AttentionCall, EmaCall, Rejected, Support
from .registry import KernelSpec, forget_choices, reference_kernel


class KernelGuardWarning(RuntimeWarning):
    """A plugin kernel misbehaved at call time; the reference kernel served the call instead."""


def ema_signature(call: EmaCall) -> Hashable:
    """What an EMA kernel may branch on: options, a state, one step or many, dtype, device."""
    return (call.bidirectional, call.truncation, call.has_state, call.length == 1, call.dtype, call.device)


def attention_signature(call: AttentionCall) -> Hashable:
    """What an attention kernel may branch on: options, masks, decoding, square or chunked frames."""
    return (
        call.activation, call.causal, call.need_weights, call.has_key_mask, call.dropout_p, call.num_chunks > 1,
        call.query_length == 1, call.query_length == call.key_length, call.dtype, call.device,
    )  # fmt: skip


def _ema_args_signature(x: Tensor, coefficients: Any, initial_state: Tensor | None, options: Any) -> Hashable:
    """:func:`ema_signature` of the call ``run_ema`` builds from these arguments."""
    has_state = initial_state is not None or options.return_state
    return (options.bidirectional, options.truncation, has_state, x.shape[1] == 1, x.dtype, x.device)


def _attention_args_signature(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, key_mask: Tensor | None, options: Any
) -> Hashable:
    """:func:`attention_signature` of the call ``run_attention`` builds from these arguments."""
    queries, keys = query.shape[-2], key.shape[-2]
    return (
        options.activation, options.causal, options.need_weights, key_mask is not None, options.dropout_p,
        query.shape[1] > 1, queries == 1, queries == keys, query.dtype, query.device,
    )  # fmt: skip


CALL_SIGNATURES: Final[dict[str, Callable[[Any], Hashable]]] = {
    "ema": ema_signature,
    "attention": attention_signature,
}
ARGS_SIGNATURES: Final[dict[str, Callable[..., Hashable]]] = {
    "ema": _ema_args_signature,
    "attention": _attention_args_signature,
}


def signature(op: str, call: EmaCall | AttentionCall) -> Hashable:
    """The guard's key of ``call``: calls with one key are proven (or rejected) together."""
    return CALL_SIGNATURES[op](call)


def _allowed_dtypes(device: torch.device, *dtypes: torch.dtype) -> set[torch.dtype]:
    """``dtypes``, plus the autocast dtype of ``device`` while autocast is on (the reference's matmuls follow it)."""
    allowed = set(dtypes)
    if torch.is_autocast_enabled(device.type):
        allowed.add(torch.get_autocast_dtype(device.type))
    return allowed


def _expected(op: str, args: tuple[Any, ...]) -> list[tuple[str, tuple[int, ...], set[torch.dtype]] | None]:
    """Per output (name, shape, allowed dtypes), or None where the output is not asked for."""
    if op == "ema":
        x, coefficients, _, options = args
        batch, _, dim = x.shape
        state = (batch, dim, coefficients.input_gain.shape[-1])  # (B, D, N)
        float32 = {torch.float32}
        return [("output", tuple(x.shape), float32), ("state", state, float32) if options.return_state else None]
    query, key, value, _, _, options = args
    dtypes = _allowed_dtypes(query.device, value.dtype, query.dtype)
    output = (*query.shape[:-1], value.shape[-1])  # (B, C, Lq, V)
    weights = (*query.shape[:-1], key.shape[-2])  # (B, C, Lq, Lk)
    return [("output", output, dtypes), ("weights", weights, dtypes) if options.need_weights else None]


def output_problem(op: str, args: tuple[Any, ...], result: Any) -> str | None:
    """Why ``result`` is not what the call ``args`` requires (structure, shape, dtype), or None."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return f"returned {type(result).__name__}, expected a pair (output, {'state' if op == 'ema' else 'weights'})"
    for expected, got in zip(_expected(op, args), result):
        if expected is None:
            continue
        name, shape, dtypes = expected
        if not isinstance(got, Tensor):
            return f"returned {type(got).__name__} as its {name}, expected a tensor of shape {shape}"
        if tuple(got.shape) != shape:
            return f"returned {name} of shape {tuple(got.shape)}, expected {shape}"
        if got.dtype not in dtypes:
            allowed = " or ".join(sorted(str(d) for d in dtypes))
            return f"returned {name} of dtype {got.dtype}, expected {allowed}"
    return None


def run_reference(op: str, args: tuple[Any, ...]) -> Any:
    """The reference kernel's result for ``args``."""
    return reference_kernel(op).fn(*args)


def finiteness_problem(op: str, args: tuple[Any, ...], result: Any, reference: Any) -> str | None:
    """Where ``result`` has NaN or inf and ``reference`` is finite, or None (one device sync)."""
    for expected, got, truth in zip(_expected(op, args), result, reference):
        if expected is None or not isinstance(truth, Tensor):
            continue
        broken = torch.isfinite(truth) & ~torch.isfinite(got)
        count = int(broken.sum())
        if count:
            return f"returned NaN or inf at {count} of {broken.numel()} {expected[0]} values where the reference is finite"
    return None


class GuardedKernel:
    """A plugin kernel behind the call-time guard (see the module doc); called like the kernel."""

    def __init__(self, fn: Callable[..., Any], *, op: str, name: str, plugin: str) -> None:
        self.fn = fn
        self.__wrapped__ = fn  # signature checks and "same function" comparisons see the kernel
        self.__doc__ = fn.__doc__
        self.op, self.name, self.plugin = op, name, plugin
        self._signature_of = ARGS_SIGNATURES[op]
        self.proven: set[Hashable] = set()
        self.rejected: dict[Hashable, str] = {}

    def __call__(self, *args: Any) -> Any:
        key = self._signature_of(*args)
        if key in self.proven:
            try:
                return self.fn(*args)
            except Exception as error:
                return self._reject(key, args, f"raised {type(error).__name__}: {error}")
        return self._prove(key, args)

    def supports_guard(self, call: EmaCall | AttentionCall) -> Support | None:
        """:class:`Rejected` when the kernel failed a call with ``call``'s signature, else None."""
        reason = self.rejected.get(signature(self.op, call))
        return None if reason is None else Rejected(f"rejected by the call-time guard: it {reason}")

    def _prove(self, key: Hashable, args: tuple[Any, ...]) -> Any:
        if capturing_graph():
            return self.fn(*args)
        if key in self.rejected:
            return run_reference(self.op, args)
        try:
            result = self.fn(*args)
        except Exception as error:
            return self._reject(key, args, f"raised {type(error).__name__}: {error}")
        problem = output_problem(self.op, args, result)
        if problem is not None:
            return self._reject(key, args, problem)
        reference = run_reference(self.op, args)
        problem = finiteness_problem(self.op, args, result, reference)
        if problem is not None:
            return self._reject(key, args, problem, reference=reference)
        self.proven.add(key)
        return result

    def _reject(self, key: Hashable, args: tuple[Any, ...], problem: str, *, reference: Any = None) -> Any:
        self.proven.discard(key)
        self.rejected[key] = problem
        forget_choices()  # the next call of this signature asks supports() again and moves on
        warnings.warn(
            f"{self.op} kernel {self.name!r} of plugin {self.plugin} {problem}; the reference kernel serves "
            f"this call and every later one of the same signature",
            KernelGuardWarning,
            stacklevel=3,
        )
        return run_reference(self.op, args) if reference is None else reference


def guard_kernel(spec: KernelSpec, *, plugin: str) -> KernelSpec:
    """``spec`` with its kernel behind a :class:`GuardedKernel` and ``supports`` honouring rejections.

    ``plugin`` names the plugin in warnings, e.g. ``"'example' (mega-plugin-example 0.1.0)"``.
    """
    guarded = GuardedKernel(spec.fn, op=spec.op, name=spec.name, plugin=plugin)
    supports = spec.supports

    def supports_unless_rejected(call: Any) -> Any:
        rejection = guarded.supports_guard(call)
        return supports(call) if rejection is None else rejection

    return dataclasses.replace(spec, fn=guarded, supports=supports_unless_rejected)


def guarded_kernel(spec: KernelSpec) -> GuardedKernel | None:
    """The guard around ``spec``'s kernel, or None for a trusted (built-in) kernel."""
    return spec.fn if isinstance(spec.fn, GuardedKernel) else None
