"""Tiny configurations shared by the reliability tests (imported as ``mega_reliability_helpers``).

Imports only torch at module level: the HF pieces are imported by the tests that need them.
"""

from __future__ import annotations

from typing import Any, Final, Mapping

# Every tiny model here: hidden 16, values 24, z 8, EMA 4, NFFN 20, vocab 50.
TINY: Final[Mapping[str, Any]] = {
    "vocab_size": 50,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "intermediate_size": 24,
    "shared_representation_size": 8,
    "ema_projection_size": 4,
    "nffn_hidden_size": 20,
    "max_positions": 32,
    "initializer_range": 0.1,
    "pad_token_id": 1,
}

NO_DROPOUT: Final[Mapping[str, Any]] = {
    "dropout_prob": 0.0,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "nffn_activation_dropout_prob": 0.0,
}

CAUSAL: Final[Mapping[str, Any]] = {"is_decoder": True, "bidirectional": False}
