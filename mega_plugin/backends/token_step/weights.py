"""What one decoding step reads from a causal MEGA stack, taken once when a decoder is built.

A step multiplies one token per row by every projection and advances every EMA by one position.
The parameters it needs are read from the core modules here, in the form the step uses: the EMA
coefficients in fp32 (the core recomputes them from the damping and decay factors on every call),
the relative bias of every (query slot, key slot) pair of a frame as one table, and each linear
layer's weight and bias as a :class:`Projection`. Nothing is copied but those derived tables:
the projections hold the modules' own parameters. A change to the parameters after the build
(a training step, ``load_state_dict``) needs a new snapshot (:meth:`StaticDecoder.refresh`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Final

import torch
from torch import Tensor, nn

from ...core.block import MegaBlock
from ...core.ffn import NormalizedFeedForward
from ...core.gated_attention import MovingAverageGatedAttention
from ...core.norms import SequenceNorm
from ...core.ops.attention.reference import ELEMENT_FUNCTIONS
from ..module_walk import computes_own_product, weights_elsewhere

MAX_FRAME_TABLE: Final = 1 << 22
"""Largest (slot, slot) bias table per layer, in elements (16 MiB in fp32): every chunk up to 2048
and unchunked decoding up to 2048 positions. Longer unchunked frames would pin S x S per layer."""

SPLIT_MIN_WEIGHTS: Final = 1 << 15
"""Weights (elements) from which a product of few rows is split in halves (128 KiB in fp32): below,
the split's extra ops cost about what a second core saves. Measured on the benchmark model, batch
1, one step: 677 us eager / 486 us compiled with every projection split, 721 / 588 with only the
256 x 1088 and 256 x 1000 ones, 767 / 643 with none."""

SPLIT_ROWS_MAX: Final = 4
"""Rows (batch size) up to which a projection runs as two half-width products at once (see
:class:`Projection`); larger batches are matrix products that use every core by themselves."""


@dataclass(frozen=True)
class Projection:
    """A linear layer ``x W^T + b`` for (B, I) rows.

    A product with one row reads the whole weight for a few FLOPs: it is bounded by memory
    bandwidth, and torch's matrix-vector product runs on one core. With ``halves`` the weight is
    viewed as two (I, O/2) halves (no copy) that one batched product multiplies on two cores at
    once: 1 row of 256 -> 1088 took 15 against 20 us on the 2-core benchmark machine.

    A module whose output is not its own ``x W^T + b`` (a PEFT / LoRA wrapper, a quantised
    linear, a module with forward hooks) is called as it is (``module``).
    """

    weight: Tensor | None  # (O, I), the module's own parameter
    bias: Tensor | None  # (O,)
    halves: Tensor | None = None  # (2, I, O/2): a view of ``weight``
    half_bias: Tensor | None = None  # (2, 1, O/2): a view of ``bias``
    module: nn.Module | None = None  # called instead, when its weights are not the whole story

    @classmethod
    def of(cls, linear: nn.Module, *, split_from: int | None = None) -> "Projection":
        """``linear``'s product; split in halves when it has ``split_from`` weights or more
        (default :data:`SPLIT_MIN_WEIGHTS`), two threads, a CPU and an even, contiguous weight."""
        if not computes_own_product(linear):
            return cls(weight=None, bias=None, module=linear)
        weight, bias = linear.weight, linear.bias
        out_features, in_features = weight.shape
        split = (
            weight.numel() >= (SPLIT_MIN_WEIGHTS if split_from is None else split_from)
            and weight.device.type == "cpu"
            and torch.get_num_threads() > 1
            and out_features % 2 == 0
            and weight.is_contiguous()
            and (bias is None or bias.is_contiguous())
        )
        if not split:
            return cls(weight=weight, bias=bias)
        half = out_features // 2
        return cls(
            weight=weight,
            bias=bias,
            halves=weight.view(2, half, in_features).transpose(1, 2),
            half_bias=None if bias is None else bias.view(2, 1, half),
        )

    def __call__(self, x: Tensor) -> Tensor:
        """(B, I) -> (B, O)."""
        if self.module is not None:
            return self.module(x)
        assert self.weight is not None
        if self.halves is None or x.shape[0] > SPLIT_ROWS_MAX:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        pair = x.unsqueeze(0).expand(2, *x.shape)  # (2, B, I)
        if self.half_bias is None:
            out = torch.bmm(pair, self.halves)
        else:
            out = torch.baddbmm(self.half_bias, pair, self.halves)  # (2, B, O/2)
        return out.transpose(0, 1).reshape(x.shape[0], -1)


def token_norm(norm: SequenceNorm) -> nn.Module:
    """The norm of one token per row, (B, D) -> (B, D): the module inside ``norm`` (eval batch
    norm included: ``BatchNorm1d`` reads (B, D) as (batch, features))."""
    return norm.norm


@dataclass(frozen=True)
class AttentionWeights:
    """One gated-attention sub-layer (``mega_layer``) in the step's form."""

    pre_norm: nn.Module | None  # the norm before the sub-layer (pre-norm), else None
    post_norm: nn.Module | None  # the norm after the gated residual (post-norm), else None
    activation: Callable[[Tensor], Tensor]
    input_gain: Tensor  # (D, N) fp32: damping * expansion
    decay: Tensor  # (D, N) fp32: 1 - damping * decay
    output_gain: Tensor  # (D, N) fp32: projection / sqrt(N)
    residual_weight: Tensor  # (D,)
    value: Projection  # v_proj: D -> V
    mix: Projection  # mx_proj: D -> D + Z + V + D
    hidden: Projection  # h_proj: V -> D
    query_weight: Tensor  # (Z,)
    query_bias: Tensor
    key_weight: Tensor
    key_bias: Tensor
    bias_rows: Tensor | None  # (S, S): row s, the bias of a query at slot s over the key slots; -inf past s (softmax)
    visible_rows: Tensor | None  # (S, S): 1.0 where key slot <= query slot, else 0.0
    # (both None for weights built without a frame: the caller then gives each step its bias row)
    attention_activation: str
    element_function: Callable[[Tensor], Tensor] | None  # laplace / relu2; None for softmax
    scale: float
    sizes: tuple[int, int, int]  # (D, Z, V)


@dataclass(frozen=True)
class FeedForwardWeights:
    """The normalized feed-forward network (``nffn``) in the step's form."""

    pre_norm: nn.Module | None
    post_norm: nn.Module | None
    activation: Callable[[Tensor], Tensor]
    fc1: Projection
    fc2: Projection


@dataclass(frozen=True)
class BlockWeights:
    attention: AttentionWeights
    ffn: FeedForwardWeights | None


def unsupported_block(block: MegaBlock) -> str | None:
    """Why static decoding cannot run ``block`` (a sentence naming the option), or None.

    (A bidirectional stack is refused by the decoder itself: it cannot stream at all.)"""
    if block.cross_attn is not None:
        return "add_cross_attention=True: static decoding runs decoder-only models (encoder-decoder models decode through generate())"
    return None


def frame_tables(layer: MovingAverageGatedAttention, slots: int) -> tuple[Tensor, Tensor]:
    """(bias_rows, visible_rows), each (S, S), for a frame of ``slots`` positions."""
    bias = layer.rel_pos_bias(slots, slots, 0).detach()  # (S, S)
    visible = torch.ones(slots, slots, dtype=torch.bool, device=bias.device).tril()
    if layer.attention_activation == "softmax":
        bias = bias.masked_fill(~visible, float("-inf"))
    return bias.contiguous(), visible.to(bias.dtype)


def attention_weights(layer: MovingAverageGatedAttention, *, slots: int | None) -> AttentionWeights:
    """``layer`` in the step's form; with the (S, S) frame tables for ``slots`` positions (None:
    without tables, for eager steps that compute their bias row)."""
    coefficients = layer.ema_gate.coefficients()
    bias_rows, visible_rows = (None, None) if slots is None else frame_tables(layer, slots)
    return AttentionWeights(
        pre_norm=token_norm(layer.norm) if layer.prenorm else None,
        post_norm=None if layer.prenorm else token_norm(layer.norm),
        activation=layer.activation,
        input_gain=coefficients.input_gain.detach().float().contiguous(),
        decay=coefficients.decay.detach().float().contiguous(),
        output_gain=coefficients.output_gain.detach().float().contiguous(),
        residual_weight=layer.ema_gate.residual_weight,
        value=Projection.of(layer.v_proj),
        mix=Projection.of(layer.mx_proj),
        hidden=Projection.of(layer.h_proj),
        query_weight=layer.qk_weight[0],
        query_bias=layer.qk_bias[0],
        key_weight=layer.qk_weight[1],
        key_bias=layer.qk_bias[1],
        bias_rows=bias_rows,
        visible_rows=visible_rows,
        attention_activation=layer.attention_activation,
        element_function=ELEMENT_FUNCTIONS.get(layer.attention_activation),
        scale=layer.scale,
        sizes=(layer.hidden_size, layer.shared_size, layer.value_size),
    )


def feed_forward_weights(ffn: NormalizedFeedForward) -> FeedForwardWeights:
    return FeedForwardWeights(
        pre_norm=token_norm(ffn.norm) if ffn.prenorm else None,
        post_norm=None if ffn.prenorm else token_norm(ffn.norm),
        activation=ffn.activation,
        fc1=Projection.of(ffn.fc1),
        fc2=Projection.of(ffn.fc2),
    )


def block_weights(block: MegaBlock, *, slots: int) -> BlockWeights:
    """``block`` in the step's form, for frames of ``slots`` positions."""
    reason = unsupported_block(block)
    if reason is not None:
        raise ValueError(f"static decoding does not support {reason}")
    if weights_elsewhere(block):
        raise ValueError(
            "static decoding reads the layers' weights in memory, and this model's are offloaded "
            "(accelerate's cpu_offload / disk_offload / device_map): decode it with generate()"
        )
    if slots * slots > MAX_FRAME_TABLE:
        raise ValueError(
            f"a frame of {slots} positions needs a {slots} x {slots} bias table per layer; static decoding "
            f"allows frames up to {int(MAX_FRAME_TABLE ** 0.5)} positions (chunk_size, or max_length without chunking)"
        )
    with torch.no_grad():
        return BlockWeights(
            attention=attention_weights(block.mega_layer, slots=slots),
            ffn=None if block.nffn is None else feed_forward_weights(block.nffn),
        )


__all__ = [
    "AttentionWeights",
    "BlockWeights",
    "FeedForwardWeights",
    "MAX_FRAME_TABLE",
    "Projection",
    "block_weights",
    "unsupported_block",
]
