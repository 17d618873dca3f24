"""``MegaSequenceClassifier``: the fairseq2 face of a MEGA classifier (family ``mega_classifier``).

The module tree is the HF one below ``mega.`` (``embedding_layer``, ``layers``, ``final_norm``)
plus ``classifier``, all core modules, so the math is the core's and the key map is a prefix.
Calling convention as fairseq2's classifiers: ``model(seqs, seqs_layout)`` -> logits (N, num_labels);
token ids (N, S) or real numbers (N, S) float; padded layouts give the key mask. A retrieval pair
(``classifier_dual_input``) passes the second sequence as ``pair_seqs`` / ``pair_layout``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor
from torch.nn import Module

from ...core.backbone import build_final_norm, run_backbone
from ...core.embeddings import MegaEmbeddings
from ...core.heads import MegaClassificationHead
from ...core.init import initialize_tree
from ...core.lra_head import MegaLraClassificationHead
from ...core.stack import MegaLayerStack
from .classifier_config import MegaClassifierConfig

if TYPE_CHECKING:
    from fairseq2.nn import BatchLayout


class MegaSequenceClassifier(Module):
    """A MEGA encoder, its optional final norm, and the configured sequence head."""

    def __init__(self, config: MegaClassifierConfig) -> None:
        super().__init__()
        core = config.to_core()
        self.config = config
        self.embedding_layer = MegaEmbeddings(core)
        self.layers = MegaLayerStack(core)
        self.final_norm = build_final_norm(core)
        self.classifier: Module
        if core.classifier_style == "lra":
            self.classifier = MegaLraClassificationHead(core, config.num_labels, dropout=config.head_dropout)
        else:
            self.classifier = MegaClassificationHead(core.hidden_size, config.num_labels, dropout=config.head_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        initialize_tree(self, std=self.config.initializer_range)

    def encode(self, seqs: Tensor, seqs_layout: BatchLayout) -> tuple[Tensor, Tensor | None]:
        """(N, S) ids or floats -> last hidden state (N, S, D) and its (N, S) bool key mask (None: all real)."""
        if seqs_layout.packed:
            raise ValueError("mega_classifier takes padded batches (one sequence per row), not packed ones")
        key_mask = seqs_layout.position_indices >= 0 if seqs_layout.padded else None  # (N, S)
        inputs = {"input_values": seqs} if seqs.is_floating_point() else {"input_ids": seqs}
        result = run_backbone(self.embedding_layer, self.layers, attention_mask=key_mask, final_norm=self.final_norm, **inputs)
        if key_mask is not None and bool(key_mask.all()):
            key_mask = None
        return result.hidden, key_mask

    def forward(
        self,
        seqs: Tensor,
        seqs_layout: BatchLayout,
        pair_seqs: Tensor | None = None,
        pair_layout: BatchLayout | None = None,
    ) -> Tensor:
        hidden, key_mask = self.encode(seqs, seqs_layout)
        if not isinstance(self.classifier, MegaLraClassificationHead):
            if pair_seqs is not None:
                raise ValueError("pair_seqs needs classifier_style='lra' with classifier_dual_input=True")
            return self.classifier(hidden)
        pair = None
        if pair_seqs is not None:
            if pair_layout is None:
                raise ValueError("pass pair_layout with pair_seqs")
            pair = self.encode(pair_seqs, pair_layout)
        return self.classifier(hidden, key_mask, pair=pair)


def create_mega_classifier_model(config: MegaClassifierConfig) -> MegaSequenceClassifier:
    """The ``mega_classifier`` family's factory."""
    return MegaSequenceClassifier(config)


def convert_mega_classifier_state_dict(state_dict: dict[str, Tensor], config: MegaClassifierConfig) -> dict[str, Tensor]:
    """HF classifier keys -> this module tree: ``mega.`` dropped (the pooler, unused by the heads, too)."""
    converted = {}
    for key, tensor in state_dict.items():
        if key.startswith("mega.pooler."):
            continue
        converted[key.removeprefix("mega.")] = tensor
    return converted
