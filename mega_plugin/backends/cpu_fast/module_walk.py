"""``any_module``: a test over a module tree, cheap enough for every decoding step.

``nn.Module.modules()`` and ``parameters()`` keep a set of the modules seen and build their
names; over a gated-attention layer (~10 modules, ~16 parameters) that walk costs ~11 us, and the
fast paths ask such questions per layer and step. A plain depth-first walk over ``_modules``
asks the same question in ~4 us. (A module reached twice is tested twice: the answers are the same.)
"""

from __future__ import annotations

from typing import Callable

from torch import nn
from torch.nn.modules import module as module_internals


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
