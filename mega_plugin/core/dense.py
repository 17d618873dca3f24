"""The projections of a MEGA layer through the ``linear`` kernel registry.

A layer calls :func:`project` with its ``nn.Linear`` submodule instead of calling it, so the
registry can run the GEMM on a faster backend (``kernels/onednn.py``) while the module, its
parameters and its state-dict keys stay a plain ``nn.Linear``. A module that is not exactly
``nn.Linear`` (a PEFT/LoRA wrapper, a quantised linear) or that carries hooks is called as
it is, so wrappers and hooks see every call.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules import module as module_internals

from .kernels import AUTO, resolve_kernel
from .kernels.onednn import unsupported_tensor


def _has_hooks(module: nn.Module) -> bool:
    local = (
        module._forward_hooks,
        module._forward_pre_hooks,
        module._backward_hooks,
        module._backward_pre_hooks,
    )
    shared = (
        module_internals._global_forward_hooks,
        module_internals._global_forward_pre_hooks,
        module_internals._global_backward_hooks,
        module_internals._global_backward_pre_hooks,
    )
    return any(bool(hooks) for hooks in (*local, *shared))


def project(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` for a projection ``module``, with the GEMM chosen by the kernel registry."""
    if type(module) is not nn.Linear or _has_hooks(module):
        return module(x)
    weight, bias = module.weight, module.bias
    call = {
        "device": x.device,
        "dtype": x.dtype,
        "rows": x.numel() // max(1, x.shape[-1]),
        "operand_issue": unsupported_tensor(x) or unsupported_tensor(weight) or unsupported_tensor(bias),
    }
    return resolve_kernel("linear", AUTO, call).fn(x, weight, bias)
