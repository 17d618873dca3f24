"""The ``attention`` op: single-head MEGA attention over frames (reference kernel here)."""

from __future__ import annotations

from .reference import ELEMENT_FUNCTIONS, allowed_mask, laplace, reference_attention, relu2

__all__ = ["ELEMENT_FUNCTIONS", "allowed_mask", "laplace", "reference_attention", "relu2"]
