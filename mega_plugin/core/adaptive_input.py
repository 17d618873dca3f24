"""Adaptive input embeddings (Baevski & Auli, 2019): frequent words get wide vectors, rare ones narrow.

The vocabulary is cut into bands (:func:`~.config_lm.band_edges`); band ``i`` is an embedding of
width ``hidden_size // factor ** i`` followed by a bias-free projection to ``hidden_size``. The
original WikiText-103 model shares these tables with its adaptive softmax
(:mod:`.adaptive_softmax`), which reads them through :meth:`AdaptiveInput.band_weights`.
"""

from __future__ import annotations

from torch import Tensor, nn

from .config import MegaCoreConfig
from .config_lm import band_edges, band_width


class AdaptiveInput(nn.Module):
    """Token ids (*) -> (*, hidden_size) through one embedding + projection per band.

    ``bands.{i}`` is the band's ``nn.Embedding`` (ids relative to the band's start; the padding
    row lives in band 0, as in the original), ``projections.{i}`` its ``nn.Linear`` to
    ``hidden_size`` without bias.
    """

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        if config.adaptive_input_cutoffs is None:
            raise ValueError("AdaptiveInput needs adaptive_input_cutoffs (a list of vocabulary cutoffs)")
        self.edges = band_edges(config.adaptive_input_cutoffs, config.vocab_size)
        self.hidden_size = config.hidden_size
        padding_idx = config.pad_token_id
        if padding_idx is not None and not 0 <= padding_idx < self.edges[0]:
            raise ValueError(
                f"pad_token_id={padding_idx} must lie in the first adaptive-input band [0, {self.edges[0]})"
            )
        self.padding_idx = padding_idx
        self.bands = nn.ModuleList()
        self.projections = nn.ModuleList()
        start = 0
        for index, end in enumerate(self.edges):
            width = band_width(config.hidden_size, float(config.adaptive_input_factor), index)
            self.bands.append(nn.Embedding(end - start, width, padding_idx=padding_idx if index == 0 else None))
            self.projections.append(nn.Linear(width, config.hidden_size, bias=False))
            start = end

    @property
    def num_embeddings(self) -> int:
        """The vocabulary size the bands cover."""
        return self.edges[-1]

    @property
    def weight(self) -> Tensor:
        """Band 0's table: the parameter whose device and dtype stand for the module's (HF utilities read it)."""
        return self.bands[0].weight

    def band_weights(self, band: int) -> tuple[Tensor, Tensor]:
        """(embedding (size, width), projection (hidden_size, width)) of ``band``."""
        return self.bands[band].weight, self.projections[band].weight

    def forward(self, ids: Tensor) -> Tensor:
        """(*) ids in [0, vocab_size) -> (*, hidden_size); every id goes through its own band only."""
        reference = self.bands[0].weight
        result = reference.new_empty(*ids.shape, self.hidden_size)
        start = 0
        for index, end in enumerate(self.edges):
            in_band = (ids >= start) & (ids < end)  # (*)
            if bool(in_band.any()):
                band_ids = ids[in_band] - start  # (n,)
                result[in_band] = self.projections[index](self.bands[index](band_ids)).to(result.dtype)
            start = end
        return result
