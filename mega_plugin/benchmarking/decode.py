"""Decoding benchmark: ms per new token and state bytes versus context length.

With chunking, the per-token cost and the state must not grow with the context: the state
holds the EMA state (B, D, N) and the keys/values of the current chunk only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.stack import MegaBackbone
from ..core.state import MegaState
from .common import Progress, benchmark_config, best_time


@dataclass
class DecodeResult:
    chunk_size: int | None
    context: int
    ms_per_token: float
    state_bytes: int

    @property
    def tokens_per_second(self) -> float:
        return 1000.0 / self.ms_per_token


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
        model = MegaBackbone(benchmark_config(chunk_size=chunk_size, causal=True)).eval()
        for context in contexts:
            progress.step(f"chunk={chunk_size} context={context}")
            if chunk_size is None and context > 8192:
                continue  # an unchunked prefix of this length is quadratic: skipped
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
        lines.append(
            f"| {r.chunk_size or 'none'} | {r.context} | {r.ms_per_token:.2f} | {r.tokens_per_second:.0f} | {r.state_bytes:,} |"
        )
    return "\n".join(lines)
