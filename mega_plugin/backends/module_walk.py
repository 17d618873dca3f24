"""Tests over a module tree, cheap enough for every decoding step: ``any_module``, hooks,
offloaded weights (:func:`weights_elsewhere`), plain linear products (:func:`computes_own_product`).

``nn.Module.modules()`` and ``parameters()`` keep a set of the modules seen and build their
names; over a gated-attention layer (~10 modules, ~16 parameters) that walk costs ~11 us, and the
fast paths ask such questions per layer and step. A plain depth-first walk over ``_modules``
asks the same question in ~4 us. (A module reached twice is tested twice: the answers are the same.)
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn
from torch.nn.modules import module as module_internals

_PLAIN_LINEAR_FORWARDS: set[Callable[..., object]] = {nn.Linear.forward}
"""The ``forward`` of each ``nn.Linear`` class whose call is exactly ``x W^T + b``."""

LinearClass = TypeVar("LinearClass", bound=type[nn.Linear])


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward (or forward-pre) hooks of its own."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def global_forward_hooks() -> bool:
    """Whether forward hooks registered for every module (``register_module_forward_hook``) exist."""
    return bool(module_internals._global_forward_hooks or module_internals._global_forward_pre_hooks)


def any_module(root: nn.Module, test: Callable[[nn.Module], bool]) -> bool:
    """Whether ``test`` holds for ``root`` or any module under it."""
    pending = [root]
    while pending:
        module = pending.pop()
        if test(module):
            return True
        pending.extend(child for child in module._modules.values() if child is not None)
    return False


__all__ = ["any_module", "global_forward_hooks", "has_forward_hooks"]


def weights_elsewhere(module: nn.Module) -> bool:
    """Whether some weight of ``module`` is not in memory: accelerate's offloading (``cpu_offload``,
    ``disk_offload``, a ``device_map`` with "cpu"/"disk") keeps it on the meta device and hooks
    each submodule's call to bring its own weights in. The fast paths read the weights of
    several submodules in one place, past those hooks, so they step aside."""
    return any_module(module, _holds_meta_parameter)


def _holds_meta_parameter(module: nn.Module) -> bool:
    return any(parameter is not None and parameter.is_meta for parameter in module._parameters.values())


def plain_linear(cls: LinearClass) -> LinearClass:
    """Declare that calling an ``nn.Linear`` subclass computes exactly ``x W^T + b`` (a class
    decorator: a backend's linear that only changes how the product is computed)."""
    _PLAIN_LINEAR_FORWARDS.add(cls.forward)
    return cls


def computes_own_product(module: nn.Module) -> bool:
    """Whether calling ``module`` computes exactly ``x W^T + b`` of its own weight and bias: a
    plain ``nn.Linear`` (or a :func:`plain_linear` subclass) with its weight in memory and no
    forward hooks (not a PEFT wrapper, a quantised linear, an offloaded or a hooked module)."""
    return (
        isinstance(module, nn.Linear)
        and type(module).forward in _PLAIN_LINEAR_FORWARDS
        and not module.weight.is_meta
        and not has_forward_hooks(module)
        and not global_forward_hooks()
    )
