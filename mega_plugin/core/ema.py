"""The multi-dimensional damped EMA sub-layer (``ema_gate`` in checkpoints)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MegaCoreConfig
from .ops import EmaCoefficients, EmaOptions, run_ema


class MultiDimensionDampedEma(nn.Module):
    """``silu(EMA(x) + residual_weight * x)`` with K = D (causal) or 2D (bidirectional) kernels.

    Parameter names and shapes are those of HF checkpoints: ``damping_factor``,
    ``decay_factor``, ``ema_expansion_matrix`` (K, N, 1), ``kernel_projection_matrix`` (K, N),
    ``residual_weight`` (D). The EMA itself runs in the kernel selected by ``kernel_name``.
    """

    def __init__(
        self,
        hidden_size: int,
        ema_size: int,
        *,
        bidirectional: bool,
        truncation: int | None,
        kernel_name: str = "auto",
        damping_std: float = 0.2,
        expansion_std: float = 0.02,
        projection_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.ema_size = ema_size
        self.bidirectional = bidirectional
        self.truncation = truncation
        self.kernel_name = kernel_name
        self.damping_std = damping_std
        self.expansion_std = expansion_std
        self.projection_std = projection_std
        channels = 2 * hidden_size if bidirectional else hidden_size
        self.damping_factor = nn.Parameter(torch.zeros(channels, ema_size, 1))
        self.decay_factor = nn.Parameter(torch.zeros(channels, ema_size, 1))
        self.ema_expansion_matrix = nn.Parameter(torch.zeros(channels, ema_size, 1))
        self.kernel_projection_matrix = nn.Parameter(torch.zeros(channels, ema_size))
        self.residual_weight = nn.Parameter(torch.zeros(hidden_size))

    @classmethod
    def from_config(cls, config: MegaCoreConfig) -> MultiDimensionDampedEma:
        """The ``ema_gate`` of a layer built from ``config``."""
        return cls(
            config.hidden_size,
            config.ema_projection_size,
            bidirectional=config.bidirectional,
            truncation=config.truncation,
            kernel_name=config.ema_kernel,
            damping_std=config.ema_delta_alpha_range,
            expansion_std=config.ema_beta_range,
            projection_std=config.ema_gamma_omega_range,
        )

    def reset_parameters(self) -> None:
        nn.init.normal_(self.damping_factor, mean=0.0, std=self.damping_std)
        nn.init.normal_(self.decay_factor, mean=0.0, std=self.damping_std)
        # Expansion starts near (+1, -1, +1, ...) along N so the components differ in sign.
        with torch.no_grad():
            signs = torch.ones(self.ema_size, 1, device=self.ema_expansion_matrix.device)
            signs[1::2] = -1.0
            self.ema_expansion_matrix.normal_(mean=0.0, std=self.expansion_std).add_(signs)
        nn.init.normal_(self.kernel_projection_matrix, mean=0.0, std=self.projection_std)
        nn.init.normal_(self.residual_weight, mean=0.0, std=self.projection_std)

    def coefficients(self) -> EmaCoefficients:
        """The (K, N) coefficients; recomputed every call so they never go stale."""
        damping = torch.sigmoid(self.damping_factor.squeeze(-1))
        decay = torch.sigmoid(self.decay_factor.squeeze(-1))
        return EmaCoefficients(
            input_gain=damping * self.ema_expansion_matrix.squeeze(-1),
            decay=1.0 - damping * decay,
            output_gain=self.kernel_projection_matrix * math.sqrt(1.0 / self.ema_size),
        )

    def forward(
        self,
        x: Tensor,
        *,
        key_mask: Tensor | None = None,
        state: Tensor | None = None,
        window: Tensor | None = None,
        return_state: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``silu(EMA(x) + residual_weight * x)`` over ``x`` (B, L, D).

        ``key_mask`` (B, L) marks real tokens (padding enters the EMA as zero). For streaming
        (causal only): an untruncated EMA carries ``state`` (B, D, N); a truncated one carries
        ``window`` (B, W, D), the last ``truncation - 1`` inputs, since its output is not a
        function of a small state. Returns (output, new state, new window).
        """
        signal = x if key_mask is None else x.masked_fill(~key_mask.unsqueeze(-1), 0.0)
        streaming = return_state or state is not None or window is not None
        if streaming and self.bidirectional:
            raise ValueError("a bidirectional EMA cannot stream: set bidirectional=False for decoding")
        new_state = new_window = None
        if streaming and self.truncation is not None:
            # the truncated kernel reaches truncation - 1 inputs back: run it over them again
            length = signal.shape[1]
            full = signal if window is None else torch.cat([window.to(signal.dtype), signal], dim=1)
            ema, _ = self.run(full)
            ema = ema[:, full.shape[1] - length :]
            if return_state:
                new_window = full[:, max(0, full.shape[1] - (self.truncation - 1)) :]
        else:
            ema, new_state = self.run(signal, initial_state=state, return_state=return_state)
        mixed = torch.addcmul(ema.to(x.dtype), x, self.residual_weight)  # EMA(x) + residual_weight * x
        # contiguous whatever layout the kernel returned: dropout draws its mask in memory order,
        # and a seeded run must draw the same mask whichever kernel ran
        return F.silu(mixed.contiguous()), new_state, new_window

    def run(
        self, signal: Tensor, *, initial_state: Tensor | None = None, return_state: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """The EMA itself (before the residual mix) of ``signal`` (B, L, D): (fp32 (B, L, D), state or None)."""
        options = EmaOptions(bidirectional=self.bidirectional, truncation=self.truncation, return_state=return_state)
        return run_ema(signal, self.coefficients(), initial_state, options, kernel=self.kernel_name)

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, ema_size={self.ema_size}, bidirectional={self.bidirectional}, "
            f"truncation={self.truncation}, kernel={self.kernel_name!r}"
        )
