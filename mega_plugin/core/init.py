"""The reference MEGA initialisation, applied module by module.

``initialize_module`` initialises one module's *own* parameters (not its children), so it
fits both ``PreTrainedModel._init_weights`` (called per module) and a recursive
``reset_parameters`` (fairseq2's meta-device and FSDP initialisation).
"""

from __future__ import annotations

from torch import Tensor, nn

from .ema import MultiDimensionDampedEma
from .gated_attention import MovingAverageGatedAttention
from .norms import RMSNorm, ScaleNorm
from .positional import RotaryRelativePositionalBias, SimpleRelativePositionalBias
from .real_number_embedding import RealNumberEmbedding

_SELF_INITIALISING = (
    MultiDimensionDampedEma,
    MovingAverageGatedAttention,
    SimpleRelativePositionalBias,
    RotaryRelativePositionalBias,
    ScaleNorm,
    RMSNorm,
    RealNumberEmbedding,
)


def init_linear_(weight: Tensor, bias: Tensor | None, *, std: float) -> None:
    """The reference linear initialisation, in place: ``weight`` (out, in) ~ N(0, std), ``bias`` zero.

    Works on the tensors, so any framework's linear layer can use it (fairseq2 ``Linear`` via
    its ``init_fn``, ``torch.nn.Linear`` via :func:`initialize_module`).
    """
    nn.init.normal_(weight, mean=0.0, std=std)
    if bias is not None:
        nn.init.zeros_(bias)


def init_embedding_(weight: Tensor, *, std: float, padding_idx: int | None) -> None:
    """The reference embedding initialisation, in place: ``weight`` (V, D) ~ N(0, std), padding row zero."""
    nn.init.normal_(weight, mean=0.0, std=std)
    if padding_idx is not None:
        nn.init.zeros_(weight[padding_idx])


def initialize_module(module: nn.Module, *, std: float) -> None:
    """Initialise ``module``'s own parameters as the reference does.

    Linear: N(0, std) weights, zero bias. Embeddings: N(0, std), padding row zero. Norms: ones
    and zeros. MEGA modules: their ``reset_parameters`` (EMA ranges, qk, relative bias).
    """
    if isinstance(module, _SELF_INITIALISING):
        module.reset_parameters()
    elif isinstance(module, nn.Linear):
        init_linear_(module.weight, module.bias, std=std)
    elif isinstance(module, nn.Embedding):
        init_embedding_(module.weight, std=std, padding_idx=module.padding_idx)
    elif isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
        module.reset_parameters()


def initialize_tree(root: nn.Module, *, std: float) -> None:
    """Initialise every module under ``root`` (children first, like ``post_init``)."""
    for module in root.modules():
        initialize_module(module, std=std)
