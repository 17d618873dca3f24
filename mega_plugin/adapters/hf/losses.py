"""The language-model losses of the HF heads, as transformers' ``Trainer`` calls them.

With gradient accumulation the ``Trainer`` passes ``num_items_in_batch``, the number of labelled
tokens in the whole accumulated batch: each micro-batch then contributes the *sum* of its token
losses divided by that number, so k micro-batches make the same update as one batch of all of
them (a per-micro-batch mean would weight short micro-batches up, and the ``Trainer`` no longer
divides by k when the model takes the count). Labels of -100 are ignored.
"""

from __future__ import annotations

from typing import Final

import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX: Final = -100


def token_loss(
    logits: Tensor,
    labels: Tensor | None,
    *,
    shift: bool,
    num_items_in_batch: Tensor | int | None = None,
    shift_labels: Tensor | None = None,
) -> Tensor | None:
    """Cross-entropy of ``logits`` (B, L, V) against token labels, or None without labels.

    ``shift``: position t predicts token t + 1 (causal LM), so ``labels`` (B, L) are compared
    with the logits one step earlier; ``shift_labels`` (B, L), already aligned with the logits,
    take their place when given. ``num_items_in_batch``: divide the summed loss by it instead of
    averaging over this batch's labelled tokens.
    """
    if shift_labels is not None:
        targets, scores = shift_labels, logits
    elif labels is None:
        return None
    elif shift:
        targets, scores = labels[:, 1:], logits[:, :-1]
    else:
        targets, scores = labels, logits
    flat_scores = scores.reshape(-1, scores.shape[-1])
    flat_targets = targets.reshape(-1).to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(flat_scores, flat_targets, ignore_index=IGNORE_INDEX)
    total = F.cross_entropy(flat_scores, flat_targets, ignore_index=IGNORE_INDEX, reduction="sum")
    if isinstance(num_items_in_batch, Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
