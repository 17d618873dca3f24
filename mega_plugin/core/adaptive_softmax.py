"""Adaptive softmax (Grave et al., 2017) with the original MEGA language models' weight sharing.

The vocabulary is cut into clusters at the cutoffs. The head scores the first cluster's words
and one entry per tail cluster; tail ``i`` scores its words through a narrower projection:

    log p(w) = log_softmax(head(x))[w]                                  w in the head
    log p(w) = log_softmax(head(x))[c0 + i] + log_softmax(tail_i(x))[w - start_i]   w in tail i

``tail_i(x) = out_i(dropout(proj_i(x)))``. With ``tie_adaptive_weights`` the head's word rows
and ``out_i`` are the adaptive-input band tables; with ``tie_adaptive_proj``, ``proj_i`` is band
``i + 1``'s input projection, transposed. Tied weights are not held here: the caller passes the
:class:`~.adaptive_input.AdaptiveInput` to each call, so every weight has one checkpoint key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adaptive_input import AdaptiveInput
from .config import MegaCoreConfig
from .config_lm import band_edges, band_width


class AdaptiveSoftmax(nn.Module):
    """Full-vocabulary log-probabilities and per-target log-probabilities from (*, D) features.

    Parameters: ``head_words`` (c0, D) unless tied, ``head_clusters`` (clusters, D),
    ``tail_projections.{i}`` (width_i, D) unless the projections are tied, ``tail_outputs.{i}``
    (size_i, width_i) unless the weights are tied. All linear maps are bias-free.
    """

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        if config.adaptive_softmax_cutoffs is None:
            raise ValueError("AdaptiveSoftmax needs adaptive_softmax_cutoffs (a list of vocabulary cutoffs)")
        self.edges = band_edges(config.adaptive_softmax_cutoffs, config.vocab_size)
        self.vocab_size = config.vocab_size
        self.tie_weights = config.tie_adaptive_weights
        self.tie_projections = config.tie_adaptive_proj
        hidden, clusters = config.hidden_size, len(self.edges) - 1
        self.head_words = None if self.tie_weights else nn.Linear(hidden, self.edges[0], bias=False)
        self.head_clusters = nn.Linear(hidden, clusters, bias=False)
        widths = [band_width(hidden, float(config.adaptive_softmax_factor), i + 1) for i in range(clusters)]
        sizes = [end - start for start, end in zip(self.edges, self.edges[1:])]
        self.tail_projections = nn.ModuleList(
            [] if self.tie_projections else [nn.Linear(hidden, width, bias=False) for width in widths]
        )
        self.tail_outputs = nn.ModuleList(
            [] if self.tie_weights else [nn.Linear(width, size, bias=False) for width, size in zip(widths, sizes)]
        )
        self.dropout = nn.Dropout(float(config.adaptive_softmax_dropout_prob))

    def _tied(self, tied_input: AdaptiveInput | None) -> AdaptiveInput | None:
        if self.tie_weights and tied_input is None:
            raise ValueError("this adaptive softmax shares its weights with the adaptive input: pass tied_input")
        return tied_input if self.tie_weights else None

    def head_scores(self, x: Tensor, tied_input: AdaptiveInput | None) -> Tensor:
        """(N, D) -> (N, c0 + clusters): word scores, then cluster scores."""
        tied = self._tied(tied_input)
        words = F.linear(x, tied.band_weights(0)[0]) if tied is not None else self.head_words(x)
        return torch.cat([words, self.head_clusters(x)], dim=-1)

    def tail_scores(self, cluster: int, x: Tensor, tied_input: AdaptiveInput | None) -> Tensor:
        """(N, D) -> (N, size of ``cluster``): the tail's word scores."""
        tied = self._tied(tied_input)
        if self.tie_projections:
            projected = x @ tied.band_weights(cluster + 1)[1]  # (N, D) @ (D, width) -> (N, width)
        else:
            projected = self.tail_projections[cluster](x)
        projected = self.dropout(projected)
        if tied is not None:
            return F.linear(projected, tied.band_weights(cluster + 1)[0])
        return self.tail_outputs[cluster](projected)

    def log_probs(self, hidden: Tensor, *, tied_input: AdaptiveInput | None = None) -> Tensor:
        """(*, D) -> (*, vocab_size) log-probabilities of every word (no input dropout)."""
        x = hidden.reshape(-1, hidden.shape[-1])  # (N, D)
        head = F.log_softmax(self.head_scores(x, tied_input), dim=-1)  # (N, c0 + clusters)
        pieces = [head[:, : self.edges[0]]]
        for cluster in range(len(self.edges) - 1):
            prior = head[:, self.edges[0] + cluster, None]  # (N, 1): log p(cluster)
            pieces.append(F.log_softmax(self.tail_scores(cluster, x, tied_input), dim=-1) + prior)
        return torch.cat(pieces, dim=-1).reshape(*hidden.shape[:-1], self.vocab_size)

    def target_log_probs(self, hidden: Tensor, targets: Tensor, *, tied_input: AdaptiveInput | None = None) -> Tensor:
        """log p(target) for (N, D) features and (N,) targets in [0, vocab_size): (N,).

        Each tail runs only on the rows whose target falls in it. Dropout (training) is applied to
        the input first, as the original's training loss does.
        """
        x = self.dropout(hidden)
        head = F.log_softmax(self.head_scores(x, tied_input), dim=-1)  # (N, c0 + clusters)
        cluster_of = torch.bucketize(targets, targets.new_tensor(self.edges), right=True)  # (N,): 0 = head
        head_index = torch.where(cluster_of == 0, targets, self.edges[0] + cluster_of - 1)
        result = head.gather(1, head_index[:, None]).squeeze(1)  # (N,)
        for cluster in range(len(self.edges) - 1):
            rows = (cluster_of == cluster + 1).nonzero().squeeze(1)  # (n,)
            if rows.numel() == 0:
                continue
            tail = F.log_softmax(self.tail_scores(cluster, x[rows], tied_input), dim=-1)  # (n, size)
            word = (targets[rows] - self.edges[cluster])[:, None]
            result = result.index_add(0, rows, tail.gather(1, word).squeeze(1))
        return result
