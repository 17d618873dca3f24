"""The kernel registry: kernels are data, chosen once per distinct call.

A kernel implements one op (``"ema"`` or ``"attention"``, conventions in :mod:`.calls`) and is
registered as a :class:`KernelSpec`. :func:`select` is the one place that chooses:

* the name asked for comes from the model config (``ema_kernel`` / ``attention_kernel``),
  overridden by the environment variable ``MEGA_PLUGIN_KERNEL_<OP>``; ``auto`` by default;
* ``auto`` takes the available kernels by descending priority and keeps the first whose
  ``supports(call)`` accepts; the ``reference`` kernel accepts every call;
* a comma-separated preference (``"sdpa,auto"``) tries the named kernels in order, each only
  where it accepts the call, then ``auto`` (or ``reference``) for the rest;
* the choice depends only on the (frozen) call, the name and the registry's contents, so it is
  made once and remembered; a kernel's ``guard()`` is then the only check left per call, for
  process state that can change between two identical calls (autocast, tracing, ...).
* a plugin kernel the call-time guard rejected (:mod:`.guard`) answers ``supports(call)`` with
  :class:`~.calls.Rejected`: ``auto`` moves on, and naming it gives the reference kernel;
* while a graph is captured (``torch.compile``, ``torch.export``, ONNX export, tracing; see
  :func:`~mega_plugin.core.tracing.capturing_graph`) the op's ``reference`` kernel runs whatever
  was asked: it is written in public torch ops only, while fast kernels may use private ops,
  in-place writes or value-keyed memos that do not trace.

Torch only: plugin discovery comes in as a callback (:func:`set_discovery`).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Final, Hashable

from ..tracing import capturing_graph
from .calls import Rejected
from .conventions import SIGNATURES, KernelError, adapt_kernel
from .kernel_spec import KernelSpec, as_support

OPS: Final = tuple(SIGNATURES)
AUTO: Final = "auto"
REFERENCE: Final = "reference"


_lock = threading.RLock()
_kernels: dict[str, dict[str, KernelSpec]] = {op: {} for op in OPS}
_discovery: list[Callable[[], None]] = []
_version = 0
"""Bumped by every registration and removal; the remembered choices belong to one version."""
_choices: dict[Hashable, tuple[KernelSpec, ...]] = {}
MAX_REMEMBERED: Final = 4096
"""Choices kept before starting over (unchunked decoding asks with a new key length every step)."""
_ordered_cache: dict[str, tuple[int, tuple[KernelSpec, ...]]] = {}


def set_discovery(callback: Callable[[], None]) -> None:
    """Install a callback run before lookups (plugin discovery; it must be idempotent and cheap)."""
    with _lock:
        if callback not in _discovery:
            _discovery.append(callback)


def register_kernel(spec: KernelSpec, *, replace: bool = False) -> None:
    """Add a kernel. ``KernelError`` for an unknown op, a bad signature or a name taken by another."""
    if not spec.name or spec.name == AUTO:
        raise KernelError(f"kernel name {spec.name!r} is reserved or empty")
    spec = adapt_kernel(spec)
    with _lock:
        existing = _kernels[spec.op].get(spec.name)
        if existing is not None and not replace and _implementation(existing) is not _implementation(spec):
            raise KernelError(f"kernel {spec.op}/{spec.name} is already registered by {existing.source}")
        _kernels[spec.op][spec.name] = spec
        _changed()


def _implementation(spec: KernelSpec) -> Callable[..., Any]:
    """The function a spec was registered with (a kernel of the earlier convention is wrapped)."""
    return getattr(spec.fn, "__wrapped__", spec.fn)


def unregister_kernel(op: str, name: str) -> None:
    """Remove a kernel (plugin unloading, tests)."""
    with _lock:
        if _kernels.get(op, {}).pop(name, None) is not None:
            _changed()


def is_registered(op: str, name: str) -> bool:
    """Whether ``op`` has a kernel called ``name`` (no discovery)."""
    with _lock:
        return name in _kernels.get(op, {})


def registry_version() -> int:
    """A number that changes whenever a kernel is registered or removed."""
    return _version


def _changed() -> None:
    global _version
    _version += 1
    _choices.clear()


def forget_choices() -> None:
    """Ask every kernel's ``supports`` again at the next calls (the call-time guard rejected one)."""
    with _lock:
        _changed()


def registered_kernels() -> dict[tuple[str, str], KernelSpec]:
    """Every registered kernel by (op, name), without discovery (a plugin load's rollback snapshot)."""
    with _lock:
        return {(op, name): spec for op, specs in _kernels.items() for name, spec in specs.items()}


def kernels(op: str) -> list[KernelSpec]:
    """Registered kernels of ``op``, best first (after discovery)."""
    return list(_ordered(op))


def _ordered(op: str) -> tuple[KernelSpec, ...]:
    if op not in OPS:
        raise KernelError(f"op={op!r} is unknown; allowed values: {', '.join(OPS)}")
    for callback in list(_discovery):
        callback()
    cached = _ordered_cache.get(op)
    if cached is not None and cached[0] == _version:
        return cached[1]
    with _lock:
        ordered = tuple(sorted(_kernels[op].values(), key=lambda spec: (-spec.priority, spec.name)))
        _ordered_cache[op] = (_version, ordered)
        return ordered


def env_override(op: str) -> str | None:
    """The kernel name forced by ``MEGA_PLUGIN_KERNEL_<OP>``, if set."""
    return os.environ.get(f"MEGA_PLUGIN_KERNEL_{op.upper()}", "").strip() or None


def _candidates(op: str, name: str, call: Hashable) -> tuple[KernelSpec, ...]:
    """The kernels that may serve ``call`` under ``name``, best first, ending with one without a guard."""
    ordered = _ordered(op)
    if PREFERENCE_SEPARATOR in name:
        return _preferred(op, name, call, ordered)
    if name != AUTO:
        for spec in ordered:
            if spec.name == name:
                support = as_support(spec.is_available())
                if support.ok:
                    support = as_support(spec.supports(call))
                if isinstance(support, Rejected):  # it misbehaved on such a call: the reference serves it
                    return (reference_kernel(op),)
                if not support.ok:
                    raise KernelError(f"{op} kernel {name!r} cannot serve this call: {support.reason}")
                return (spec,)
        known = ", ".join([AUTO] + [spec.name for spec in ordered])
        raise KernelError(f"{op}_kernel={name!r} is not registered; allowed values: {known}")
    chosen: list[KernelSpec] = []
    for spec in ordered:
        if as_support(spec.is_available()).ok and as_support(spec.supports(call)).ok:
            chosen.append(spec)
            if spec.guard is None:
                return tuple(chosen)
    raise KernelError(f"no registered {op} kernel accepts this call (is the reference kernel registered?)")


PREFERENCE_SEPARATOR: Final = ","


def _preferred(op: str, name: str, call: Hashable, ordered: tuple[KernelSpec, ...]) -> tuple[KernelSpec, ...]:
    """Candidates for a preference ``"a,b,auto"``: each named kernel that accepts ``call``, in order."""
    by_name = {spec.name: spec for spec in ordered}
    chosen: list[KernelSpec] = []
    for part in (piece.strip() for piece in name.split(PREFERENCE_SEPARATOR)):
        if part == AUTO:
            return (*chosen, *_candidates(op, AUTO, call))
        spec = by_name.get(part)
        if spec is None:
            known = ", ".join([AUTO] + list(by_name))
            raise KernelError(f"{op}_kernel={name!r} names {part!r}, which is not registered; allowed values: {known}")
        if as_support(spec.is_available()).ok and as_support(spec.supports(call)).ok:
            chosen.append(spec)
            if spec.guard is None:
                return tuple(chosen)
    return (*chosen, reference_kernel(op))


def reference_kernel(op: str) -> KernelSpec:
    """The ``reference`` kernel of ``op``: public torch ops only, any shape (empty tensors included)."""
    spec = _kernels.get(op, {}).get(REFERENCE)
    if spec is None:
        raise KernelError(f"no {REFERENCE!r} kernel is registered for op={op!r} (allowed ops: {', '.join(OPS)})")
    return spec


def select(op: str, requested: str, call: Hashable) -> KernelSpec:
    """The kernel that runs ``call`` (see the module doc); the one function that chooses."""
    if capturing_graph():
        return reference_kernel(op)
    name = env_override(op) or requested or AUTO
    key = (op, name, call)
    candidates = _choices.get(key)
    if candidates is None:
        candidates = _candidates(op, name, call)
        if len(_choices) >= MAX_REMEMBERED:
            _choices.clear()
        _choices[key] = candidates
    for spec in candidates:
        if spec.guard is None:
            return spec
        support = as_support(spec.guard())
        if support.ok:
            return spec
        if name != AUTO and PREFERENCE_SEPARATOR not in name:
            raise KernelError(f"{op} kernel {name!r} cannot serve this call now: {support.reason}")
    raise KernelError(f"no registered {op} kernel accepts this call now")  # unreachable: the last has no guard
