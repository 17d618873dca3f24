"""Shared pieces of the benchmarks: the benchmark configuration, timing, progress."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..core.config import MegaCoreConfig


def without_dropout(config: MegaCoreConfig) -> MegaCoreConfig:
    """``config`` with every dropout off: the benchmarks time the same arithmetic in eval and training."""
    return dataclasses.replace(
        config,
        dropout_prob=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
    )


def benchmark_config(
    *, chunk_size: int | None, causal: bool, num_layers: int = 4, max_positions: int = 2048
) -> MegaCoreConfig:
    """The performance issue's configuration: hidden 256, v 512, NFFN 512, z 64, EMA 16, 4 layers."""
    return without_dropout(MegaCoreConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=512,
        nffn_hidden_size=512,
        shared_representation_size=64,
        ema_projection_size=16,
        num_hidden_layers=num_layers,
        bidirectional=not causal,
        is_decoder=causal,
        use_chunking=chunk_size is not None,
        chunk_size=chunk_size if chunk_size is not None else -1,
        max_positions=max(max_positions, chunk_size or 0),
    ))


def best_time(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``repeats`` calls in seconds (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@dataclass
class Progress:
    """A one-line progress display on stderr."""

    total: int
    label: str
    done: int = 0

    def step(self, what: str) -> None:
        self.done += 1
        sys.stderr.write(f"\r{self.label} [{self.done}/{self.total}] {what:<40}")
        sys.stderr.flush()
        if self.done == self.total:
            sys.stderr.write("\n")

