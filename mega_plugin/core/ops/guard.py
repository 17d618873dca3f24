"""The call-time guard of plugin kernels: each kernel proves itself once per call signature.

Kernels of installed plugins are registered wrapped in a :class:`GuardedKernel` (the plugin
registry does it; the built-in reference, portable and cpu_fast kernels are trusted and never
wrapped, so the default path has no check at all). What is checked, and the call signature
(dtype, device, options and the sizes that may change a kernel's path, never the lengths
themselves), are in :mod:`.guard_checks`.

* The first call of a signature (the proving call) checks the outputs' structure, shapes and
  dtypes against what the call requires (:func:`output_problem`, derived from the inputs), then
  runs the reference kernel once and compares finiteness: NaN or inf where the reference is
  finite fails. Passing makes the signature proven: later calls are a set lookup and the kernel.
* A failed check, or an exception from the kernel at any call, gives one
  :class:`KernelGuardWarning` naming the plugin, the kernel and what was wrong, returns the
  reference kernel's result and rejects the kernel for the signature: its ``supports(call)``
  answers :class:`~.calls.Rejected` from then on, so ``auto`` goes straight to the next kernel
  and a kernel named in the config is replaced by the reference. Under ``MEGA_PLUGIN_STRICT=1``
  (the registry passes ``strict``) the failure raises ``KernelError`` instead, for plugin CI.
* Under graph capture the ops run the reference kernel and never reach a guarded kernel; a
  guarded kernel called directly then runs without checks (no value read breaks the graph).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Hashable

import torch

from ..tracing import capturing_graph
from .calls import AttentionCall, EmaCall, Rejected, Support
from .conventions import KernelError
from .guard_checks import ARGS_SIGNATURES, finiteness_problem, output_problem, signature
from .registry import KernelSpec, forget_choices, reference_kernel


class KernelGuardWarning(RuntimeWarning):
    """A plugin kernel misbehaved at call time; the reference kernel served the call instead."""


def run_reference(op: str, args: tuple[Any, ...]) -> Any:
    """The reference kernel's result for ``args``."""
    return reference_kernel(op).fn(*args)


class GuardedKernel:
    """A plugin kernel behind the call-time guard (see the module doc); called like the kernel."""

    def __init__(
        self, fn: Callable[..., Any], *, op: str, name: str, plugin: str, strict: Callable[[], bool] = lambda: False
    ) -> None:
        self.fn = fn
        self.__wrapped__ = fn  # signature checks and "same function" comparisons see the kernel
        self.__doc__ = fn.__doc__
        self.op, self.name, self.plugin = op, name, plugin
        self.strict = strict
        """Whether a failure raises :class:`~.conventions.KernelError` instead (``MEGA_PLUGIN_STRICT=1``)."""
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
        device = args[0].device
        # Only compared: no autograd graph, and the random stream (dropout) stays the kernel's alone.
        with torch.no_grad(), torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            reference = run_reference(self.op, args)
        problem = finiteness_problem(self.op, args, result, reference)
        if problem is not None:
            return self._reject(key, args, problem, reference=None if torch.is_grad_enabled() else reference)
        self.proven.add(key)
        return result

    def _reject(self, key: Hashable, args: tuple[Any, ...], problem: str, *, reference: Any = None) -> Any:
        what = f"{self.op} kernel {self.name!r} of plugin {self.plugin} {problem}"
        if self.strict():
            raise KernelError(f"{what} (MEGA_PLUGIN_STRICT is set, so the reference kernel does not step in)")
        self.proven.discard(key)
        self.rejected[key] = problem
        forget_choices()  # the next call of this signature asks supports() again and moves on
        warnings.warn(
            f"{what}; the reference kernel serves this call and every later one of the same signature",
            KernelGuardWarning,
            stacklevel=3,
        )
        return run_reference(self.op, args) if reference is None else reference


def guard_kernel(spec: KernelSpec, *, plugin: str, strict: Callable[[], bool] = lambda: False) -> KernelSpec:
    """``spec`` with its kernel behind a :class:`GuardedKernel` and ``supports`` honouring rejections.

    ``plugin`` names the plugin in warnings, e.g. ``"'example' from mega-plugin-example"``;
    ``strict()`` is asked on a failure: True raises ``KernelError`` instead of falling back.
    """
    fn = spec.fn.fn if isinstance(spec.fn, GuardedKernel) else spec.fn  # never two guards on one kernel
    guarded = GuardedKernel(fn, op=spec.op, name=spec.name, plugin=plugin, strict=strict)
    supports = spec.supports

    def supports_unless_rejected(call: Any) -> Any:
        rejection = guarded.supports_guard(call)
        return supports(call) if rejection is None else rejection

    return dataclasses.replace(spec, fn=guarded, supports=supports_unless_rejected)


def guarded_kernel(spec: KernelSpec) -> GuardedKernel | None:
    """The guard around ``spec``'s kernel, or None for a trusted (built-in) kernel."""
    return spec.fn if isinstance(spec.fn, GuardedKernel) else None
