"""Decoding benchmark: ms per new token and state bytes versus context length.

With chunking, the per-token cost and the state must not grow with the context: the state
holds the EMA state (B, D, N) and the keys/values of the current chunk only. The same as
``mega-plugin bench decode``::

    python -m mega_plugin.benchmarks.decode --contexts 128 1024 8192 32768
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Final, Sequence

import torch

from ..core.backbone import MegaBackbone
from ..core.state import MegaState
from .common import Progress, benchmark_config, best_time
from .models import build_ours
from .suite_command import run_bench_suite


UNCHUNKED_CONTEXT_LIMIT: Final = 8192
"""Longest context prefilled without chunking: the prefill attends over the whole context
(quadratic), and the state keeps every key and value (75 MB at 8192, 4 layers)."""


@dataclass
class DecodeResult:
    chunk_size: int | None
    context: int
    ms_per_token: float | None
    state_bytes: int | None
    skipped: str | None = None
    """Why this (chunk, context) was not measured; the table prints it instead of dropping the row."""

    @property
    def tokens_per_second(self) -> float | None:
        return None if self.ms_per_token is None else 1000.0 / self.ms_per_token


def _prefill(model: MegaBackbone, context: int, *, piece: int = 4096) -> MegaState:
    state = MegaState.empty(len(model.layers))
    tokens = torch.randint(3, model.config.vocab_size, (1, context))
    for start in range(0, context, piece):
        state = model(tokens[:, start : start + piece], state=state, use_cache=True).state
    return state


def run_decode_benchmark(
    *, contexts: tuple[int, ...] = (128, 1024, 8192, 32768), steps: int = 32, chunk_sizes: tuple[int | None, ...] = (256, None)
) -> list[DecodeResult]:
    """Prefill each context (batch 1), then time ``steps`` one-token steps."""
    results = []
    progress = Progress(total=len(contexts) * len(chunk_sizes), label="decode")
    for chunk_size in chunk_sizes:
        torch.manual_seed(0)
        model = build_ours(benchmark_config(chunk_size=chunk_size, causal=True)).eval()
        for context in contexts:
            progress.step(f"chunk={chunk_size} context={context}")
            if chunk_size is None and context > UNCHUNKED_CONTEXT_LIMIT:
                reason = f"skipped: unchunked prefill over {UNCHUNKED_CONTEXT_LIMIT} tokens is quadratic"
                results.append(DecodeResult(chunk_size, context, None, None, skipped=reason))
                continue
            with torch.inference_mode():
                state = _prefill(model, context)
                token = torch.randint(3, model.config.vocab_size, (1, 1))

                def decode() -> None:
                    step_state = state.clone()
                    for _ in range(steps):
                        step_state = model(token, state=step_state, use_cache=True).state

                seconds = best_time(decode, repeats=3, warmup=1)
            results.append(DecodeResult(chunk_size, context, 1000.0 * seconds / steps, state.size_bytes()))
    return results


def format_decode_table(results: list[DecodeResult]) -> str:
    lines = ["| chunk | context | ms / token | tokens / s | state bytes |", "|---|---|---|---|---|"]
    for r in results:
        if r.ms_per_token is None or r.tokens_per_second is None or r.state_bytes is None:
            lines.append(f"| {r.chunk_size or 'none'} | {r.context} | {r.skipped or 'not measured'} | - | - |")
            continue
        lines.append(
            f"| {r.chunk_size or 'none'} | {r.context} | {r.ms_per_token:.2f} | {r.tokens_per_second:.0f} | {r.state_bytes:,} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench_suite("decode", argv)


if __name__ == "__main__":
    sys.exit(main())
