"""The language-model losses of the HF heads, as transformers' ``Trainer`` calls them.

With gradient accumulation the ``Trainer`` passes ``num_items_in_batch``, the number of labelled
tokens in the whole accumulated batch: each micro-batch then contributes the *sum* of its token
losses divided by that number, so k micro-batches make the same update as one batch of all of
them (a per-micro-batch mean would weight short micro-batches up, and the ``Trainer`` no longer
divides by k when the model takes the count). Labels of -100 are ignored.
"""

from __future__ import annotations

from typing import Callable, Final

import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX: Final = -100


def aligned_targets(
    scores: Tensor, labels: Tensor | None, *, shift: bool, shift_labels: Tensor | None = None
) -> tuple[Tensor, Tensor] | None:
    """(targets (N,), scores (N, *)) paired position by position, or None without labels.

    ``scores`` (B, L, *) are logits or features. ``shift``: position t predicts token t + 1
    (causal LM), so ``labels`` (B, L) are compared with the scores one step earlier;
    ``shift_labels`` (B, L), already aligned with the scores, take their place when given.
    """
    if shift_labels is not None:
        targets, aligned = shift_labels, scores
    elif labels is None:
        return None
    elif shift:
        targets, aligned = labels[:, 1:], scores[:, :-1]
    else:
        targets, aligned = labels, scores
    return targets.reshape(-1).to(scores.device), aligned.reshape(-1, scores.shape[-1])


def _reduce(total: Tensor, count: Tensor | int, num_items_in_batch: Tensor | int | None) -> Tensor:
    if num_items_in_batch is None:
        return total / count
    if isinstance(num_items_in_batch, Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def token_loss(
    logits: Tensor,
    labels: Tensor | None,
    *,
    shift: bool,
    num_items_in_batch: Tensor | int | None = None,
    shift_labels: Tensor | None = None,
) -> Tensor | None:
    """Cross-entropy of ``logits`` (B, L, V) against token labels, or None without labels.

    Alignment as :func:`aligned_targets`. ``num_items_in_batch``: divide the summed loss by it
    instead of averaging over this batch's labelled tokens.
    """
    pair = aligned_targets(logits, labels, shift=shift, shift_labels=shift_labels)
    if pair is None:
        return None
    flat_targets, flat_scores = pair
    if num_items_in_batch is None:
        return F.cross_entropy(flat_scores, flat_targets, ignore_index=IGNORE_INDEX)
    total = F.cross_entropy(flat_scores, flat_targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return _reduce(total, 1, num_items_in_batch)


def target_log_prob_loss(
    features: Tensor,
    labels: Tensor | None,
    target_log_probs: Callable[[Tensor, Tensor], Tensor],
    *,
    vocab_size: int,
    num_items_in_batch: Tensor | int | None = None,
    shift_labels: Tensor | None = None,
) -> Tensor | None:
    """The causal-LM loss of a head that gives log p(target) directly (the adaptive softmax).

    ``features`` (B, L, D) feed ``target_log_probs(features (N, D), targets (N,)) -> (N,)`` for the
    labelled positions only; alignment, -100 and ``num_items_in_batch`` as :func:`token_loss`
    (the mean over labelled tokens, as ``F.cross_entropy`` takes it, when no count is passed).
    """
    pair = aligned_targets(features, labels, shift=True, shift_labels=shift_labels)
    if pair is None:
        return None
    targets, flat = pair
    kept = targets != IGNORE_INDEX
    targets, flat = targets[kept], flat[kept]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab_size):
        raise ValueError(
            f"labels must be -100 or lie in [0, vocab_size={vocab_size}); "
            f"found values in [{int(targets.min())}, {int(targets.max())}]"
        )
    total = -target_log_probs(flat, targets).sum()
    return _reduce(total, targets.numel(), num_items_in_batch)
