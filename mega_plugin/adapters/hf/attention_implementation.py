"""``attn_implementation`` ("eager" | "sdpa") -> the attention kernel of every gated sub-layer.

transformers picks an attention implementation per model (``from_pretrained(...,
attn_implementation=...)``, ``set_attn_implementation``, by default "sdpa" where a class
supports it) and keeps it in ``config._attn_implementation``. MEGA's attention is one op of
the core's kernel registry (``mega_plugin.core.ops``), so the choice translates to a kernel:

- ``"eager"``: the ``reference`` kernel, explicit matmul + activation + matmul (attention
  weights available, the 4.57 reference's arithmetic);
- ``"sdpa"`` (asked for): the ``sdpa`` kernel first, which routes softmax attention through
  ``torch.nn.functional.scaled_dot_product_attention`` where the math allows (no weights asked
  for, no padding mask, no attention dropout while training; on CPU frames of at least
  1024 keys, where it pays), then the registry's ``auto`` choice for every other call.
  ``laplace`` / ``relu2`` attention has no SDPA form: it takes the auto choice, and the model
  says so at INFO;
- nothing asked for (transformers then records "sdpa"): the ``auto`` choice, the best
  registered kernel per call (SDPA among them where it is the best).

An ``attention_kernel`` other than ``"auto"`` in the config is an explicit kernel choice and
wins over both.
"""

from __future__ import annotations

import logging
from typing import Final

from torch import nn

from ...core.gated_sublayer import GatedSublayer

logger = logging.getLogger(__name__)

ALLOWED: Final = ("eager", "sdpa")
KERNEL_FOR: Final[dict[str, str]] = {"eager": "reference", "sdpa": "sdpa,auto"}
"""attn_implementation -> attention kernel name (when the config leaves the kernel on auto)."""


def attention_kernel_for(attn_implementation: str | None, *, configured_kernel: str) -> str:
    """The attention kernel a model runs under ``attn_implementation`` (None: nothing asked for)."""
    if configured_kernel != "auto":
        return configured_kernel
    if attn_implementation is None:
        return "auto"
    if attn_implementation not in KERNEL_FOR:
        raise ValueError(
            f"attn_implementation={attn_implementation!r} is not supported by MEGA; allowed values: "
            f"{', '.join(ALLOWED)} (MEGA's single-head gated attention has no flash-attention or flex form)"
        )
    return KERNEL_FOR[attn_implementation]


def apply_attention_implementation(model: nn.Module, attn_implementation: str | None, *, configured_kernel: str) -> None:
    """Set the attention kernel of every gated sub-layer (self- and cross-attention) of ``model``."""
    kernel = attention_kernel_for(attn_implementation, configured_kernel=configured_kernel)
    for module in model.modules():
        if isinstance(module, GatedSublayer):
            module.kernel_name = kernel
            if attn_implementation == "sdpa" and module.attention_activation != "softmax":
                logger.info(
                    "attn_implementation='sdpa': attention_activation=%r has no scaled_dot_product_attention "
                    "form; it runs the eager (reference) attention",
                    module.attention_activation,
                )
