"""The five MEGA normalisations behind one batch-first wrapper.

``SequenceNorm`` holds the actual norm as its ``norm`` child so state-dict keys read
``...norm.norm.weight`` as in HF checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import NORMALIZATION_TYPES, MegaCoreConfig


def mean_square(x: Tensor) -> Tensor:
    """``mean(x ** 2)`` over the last dim, (..., 1), without a squared copy of ``x``.

    Why: on CPU a squared (B, L, D) temporary is a fresh allocation, slower than the sum itself.
    """
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return norm * norm / x.shape[-1]


class ScaleNorm(nn.Module):
    """``scalar * x / sqrt(mean(x^2) + eps)`` with one learned scalar."""

    def __init__(self, *, eps: float, affine: bool) -> None:
        super().__init__()
        self.eps = eps
        self.scalar = nn.Parameter(torch.ones(1)) if affine else None

    def reset_parameters(self) -> None:
        if self.scalar is not None:
            nn.init.ones_(self.scalar)

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.rsqrt(mean_square(x) + self.eps)  # (..., 1)
        if self.scalar is not None:
            scale = scale * self.scalar
        return x * scale  # one pass over x


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)``.

    The HF port returns ``weight * x`` without normalising (a bug); this is the real RMSNorm
    of the original MEGA.
    """

    def __init__(self, features: int, *, eps: float, affine: bool) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(features)) if affine else None

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.rsqrt(mean_square(x) + self.eps)  # (..., 1)
        if self.weight is not None:
            return torch.mul(x, scale) * self.weight
        return x * scale


class SequenceNorm(nn.Module):
    """Normalise (B, L, D) activations over D with the configured norm type."""

    def __init__(self, norm_type: str, features: int, *, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.norm: nn.Module
        if norm_type == "layernorm":
            self.norm = nn.LayerNorm(features, eps=eps, elementwise_affine=affine)
        elif norm_type == "scalenorm":
            self.norm = ScaleNorm(eps=eps, affine=affine)
        elif norm_type == "rmsnorm":
            self.norm = RMSNorm(features, eps=eps, affine=affine)
        elif norm_type == "batchnorm":
            self.norm = nn.BatchNorm1d(features, eps=eps, affine=affine)
        elif norm_type == "syncbatchnorm":
            self.norm = nn.SyncBatchNorm(features, eps=eps, affine=affine)
        else:
            raise ValueError(
                f"normalization_type={norm_type!r} is not supported; allowed values: {', '.join(NORMALIZATION_TYPES)}"
            )
        self.is_batch_norm = isinstance(self.norm, nn.modules.batchnorm._BatchNorm)

    @classmethod
    def from_config(cls, config: MegaCoreConfig) -> SequenceNorm:
        """The norm of a sub-layer built from ``config`` (type, width, eps, affine)."""
        return cls(config.normalization_type, config.hidden_size, eps=config.norm_eps, affine=config.norm_affine)

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if not self.is_batch_norm:
            return self.norm(x)
        if x.dim() != 3:
            raise ValueError(f"batch normalisation expects (batch, length, features) input, got shape {tuple(x.shape)}")
        # BatchNorm1d normalises dim 1: (B, L, D) -> (B, D, L) and back.
        return self.norm(x.transpose(1, 2)).transpose(1, 2)
