"""The calling conventions of the kernel ops, for built-in and third-party kernels.

``ema`` kernels::

    fn(x, coefficients, *, bidirectional, truncation, initial_state, return_state)
        x:             (B, L, D) input, already zero at padded positions
        coefficients:  EmaCoefficients, each (K, N); K = 2D when bidirectional (forward rows first)
        truncation:    None, or the number of kernel lags to keep
        initial_state: None, or (B, D, N) state carried from earlier tokens (causal only)
        return_state:  also return the (B, D, N) state after the last token (causal only)
        -> (y (B, L, D) float32, state or None)

``attention`` kernels::

    fn(query, key, value, bias, key_mask, *, activation, causal, query_offset, scale,
       dropout_p, training, need_weights)
        query:        (B, C, Lq, Z) chunked queries (C chunks; C = 1 without chunking)
        key:          (B, C, Lk, Z)
        value:        (B, C, Lk, V)
        bias:         (Lq, Lk) additive relative-position bias, or None
        key_mask:     (B, C, Lk) bool, True where the key is a real token, or None
        activation:   "softmax", "laplace" or "relu2"
        causal:       query i may see key j only if j <= query_offset + i
        query_offset: position of query 0 inside the key frame (streaming)
        scale:        softmax temperature applied to q.k (Z ** -0.5)
        dropout_p:    dropout on the attention weights (when training)
        need_weights: also return the (B, C, Lq, Lk) weights before dropout
        -> (output (B, C, Lq, V), weights or None)

``linear`` kernels (the projections of a layer)::

    fn(input, weight, bias)
        input:  (..., K)
        weight: (N, K)
        bias:   (N) or None
        -> input @ weight.T + bias, (..., N), differentiable in all three

Element attention (laplace, relu2) divides ``q.k`` by the number of keys each query may
see (at least 1) before adding the bias, and multiplies the weights by the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from torch import Tensor

from .registry import set_signature

EMA_POSITIONAL: Final = ("x", "coefficients")
EMA_KEYWORDS: Final = ("bidirectional", "truncation", "initial_state", "return_state")
ATTENTION_POSITIONAL: Final = ("query", "key", "value", "bias", "key_mask")
ATTENTION_KEYWORDS: Final = (
    "activation",
    "causal",
    "query_offset",
    "scale",
    "dropout_p",
    "training",
    "need_weights",
)
LINEAR_POSITIONAL: Final = ("input", "weight", "bias")
LINEAR_KEYWORDS: Final = ()

set_signature("ema", positional=EMA_POSITIONAL, keywords=EMA_KEYWORDS)
set_signature("attention", positional=ATTENTION_POSITIONAL, keywords=ATTENTION_KEYWORDS)
set_signature("linear", positional=LINEAR_POSITIONAL, keywords=LINEAR_KEYWORDS)


@dataclass(frozen=True)
class EmaCoefficients:
    """Per-channel EMA coefficients derived from the learned parameters, each (K, N)."""

    input_gain: Tensor
    """``sigmoid(damping) * expansion``: how much of x_t enters the state."""

    decay: Tensor
    """``1 - sigmoid(damping) * sigmoid(decay)``: how much of the state survives a step."""

    output_gain: Tensor
    """``projection / sqrt(N)``: how the N components are read out."""
