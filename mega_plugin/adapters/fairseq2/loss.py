"""What the fairseq2 models of this package share after the logits: argument checks and the loss.

fairseq2's models take ``targets`` and return logits, the loss, or both; the checks run before
any work, so a wrong shape or reduction is reported by name instead of failing inside
``cross_entropy``.
"""

from __future__ import annotations

from typing import Final, Literal

from fairseq2.nn.functional import cross_entropy
from torch import Tensor

REDUCTIONS: Final = ("sum", "mean")


def check_loss_arguments(
    name: str, seqs: Tensor, targets: Tensor | None, target_mask: Tensor | None, reduction: str
) -> None:
    """``targets`` and ``target_mask`` must have the shape of the sequences called ``name``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    for label, tensor in (("targets", targets), ("target_mask", target_mask)):
        if tensor is not None and tensor.shape != seqs.shape:
            raise ValueError(f"{label} must have the shape of {name} {tuple(seqs.shape)}, got {tuple(tensor.shape)}")


def logits_or_loss(
    logits: Tensor,
    targets: Tensor | None,
    *,
    pad_idx: int | None,
    label_smoothing: float,
    target_mask: Tensor | None,
    reduction: Literal["sum", "mean"],
    return_logits: bool,
) -> Tensor | tuple[Tensor, Tensor]:
    """``logits`` (``targets`` None), the cross-entropy loss, or ``(loss, logits)`` with ``return_logits``."""
    if targets is None:
        return logits
    loss = cross_entropy(
        logits, targets, pad_idx, label_smoothing=label_smoothing, target_mask=target_mask, reduction=reduction
    )
    return (loss, logits) if return_logits else loss
