"""How long graph capture takes: ``torch.compile`` (inductor), ``torch.export``, of a forward, of
a training step, of a cached decoding step and of the static decoder's step, on the benchmark
configuration through the HF classes.

A training step (forward, backward, AdamW) is compiled two ways: the whole model
(``torch.compile(model, fullgraph=True)``), and block by block (``block.compile(fullgraph=True)``
on every block: the blocks share one graph, so the compiler works on one block instead of four).
The static decoder's step is one graph for every position (the slot is a tensor).

Each row is one wall-clock measurement of a first call in a fresh dynamo state (a compile is
paid once per process and per new shape, so a "best of N" would measure the cache instead), next
to the eager time of the same call and the compiled steady-state time. A decoding step is
specialised on the cache's position (the current chunk's keys grow), so every new position is a
new graph: the table shows the first three positions' calls. The compiled outputs are checked
against eager (max abs difference in the note).

Inductor keeps compiled graphs and kernels on disk (``TORCHINDUCTOR_CACHE_DIR``), so a second
process compiles the same model several times faster. By default each run gets a fresh, empty
cache directory (a cold compile, what a user pays the first time); pass the same ``--cache-dir``
twice to measure the warm case.

    python -m mega_plugin.benchmarks.compile_time --length 512 --chunk 256 --threads 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any, Callable, Final, Sequence

import torch
from torch import Tensor, nn

from .common import benchmark_config, best_time
from .machine import describe_run

Row = tuple[str, float, str]
"""(what, seconds, note)."""


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds of one call, its result)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def build(*, chunk: int | None, causal: bool, max_length: int) -> nn.Module:
    """The benchmark configuration (hidden 256, 4 layers) as an HF masked LM or causal LM."""
    from ..adapters.hf import MegaConfig, MegaForCausalLM, MegaForMaskedLM

    config = benchmark_config(chunk_size=chunk, causal=causal, max_positions=max_length)
    torch.manual_seed(0)
    hf_config = MegaConfig.from_core(config, eos_token_id=None, pad_token_id=0)
    return (MegaForCausalLM if causal else MegaForMaskedLM)(hf_config).eval()


def forward_rows(*, length: int, batch: int, chunk: int | None) -> list[Row]:
    model = build(chunk=chunk, causal=False, max_length=length)
    ids = torch.randint(3, 1000, (batch, length))
    rows: list[Row] = []
    with torch.no_grad():
        eager = model(ids).logits
        rows.append(("forward, eager", best_time(lambda: model(ids), repeats=2, warmup=0), "best of 2"))
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True)
        seconds, out = timed(lambda: compiled(ids))
        error = (out.logits - eager).abs().max().item()
        rows.append(("forward, torch.compile(fullgraph=True): first call", seconds, f"compile + run; max abs diff {error:.2g}"))
        rows.append(("forward, compiled: later calls", best_time(lambda: compiled(ids), repeats=2, warmup=0), "best of 2"))
    seconds, _ = timed(lambda: torch.export.export(model, (ids,)))
    rows.append(("forward, torch.export", seconds, "trace only (no code generation)"))
    return rows


class DecodingStep(nn.Module):
    """(ids (B, 1), cache) -> (logits (B, 1, V), new cache): one cached step of a causal LM."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, cache: Any) -> tuple[Tensor, Any]:
        from ..adapters.hf.modeling_lm import CACHE_KEYWORD

        output = self.model(input_ids, use_cache=True, **{CACHE_KEYWORD: cache})
        return output.logits, getattr(output, CACHE_KEYWORD)


def step_rows(*, prefix: int, batch: int, chunk: int | None) -> list[Row]:
    from ..adapters.hf.modeling_lm import CACHE_KEYWORD

    model = build(chunk=chunk, causal=True, max_length=prefix + 8)
    ids = torch.randint(3, 1000, (batch, prefix + 3))
    step = DecodingStep(model)
    rows: list[Row] = []
    with torch.no_grad():
        full = model(ids).logits

        def cache_at(length: int) -> Any:
            return getattr(model(ids[:, :length], use_cache=True), CACHE_KEYWORD)

        eager_cache = cache_at(prefix)  # the step advances the cache it is given: one each
        seconds, _ = timed(lambda: step(ids[:, prefix : prefix + 1], eager_cache))
        rows.append(("decoding step, eager", seconds, f"prefix {prefix}"))
        cache = cache_at(prefix)
        torch._dynamo.reset()
        compiled = torch.compile(step, fullgraph=True)
        for position in range(prefix, prefix + 3):
            seconds, (logits, cache) = timed(lambda: compiled(ids[:, position : position + 1], cache))
            error = (logits[:, 0] - full[:, position]).abs().max().item()
            rows.append((f"decoding step, compiled: position {position}", seconds, f"compile + run; max abs diff {error:.2g}"))
    seconds, _ = timed(lambda: torch.export.export(step, (ids[:, prefix : prefix + 1], cache_at(prefix))))
    rows.append(("decoding step, torch.export", seconds, "one position"))
    return rows


TRAINING_MODES: Final = {
    "eager": "eager",
    "blocks": "every block.compile(fullgraph=True)",
    "whole": "torch.compile(model, fullgraph=True)",
}


def training_step(mode: str, *, length: int, chunk: int | None, ids: Tensor) -> Callable[[], Tensor]:
    """A fresh, identically initialised causal LM and AdamW: one step per call, returning the loss."""
    if mode not in TRAINING_MODES:
        raise ValueError(f"mode={mode!r}; allowed values: {', '.join(TRAINING_MODES)}")
    model = build(chunk=chunk, causal=True, max_length=length).train()
    run: nn.Module = model
    if mode == "whole":
        run = torch.compile(model, fullgraph=True)
    elif mode == "blocks":
        for block in model.mega.layers:
            block.compile(fullgraph=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> Tensor:
        loss = run(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def training_rows(*, length: int, batch: int, chunk: int | None) -> list[Row]:
    ids = torch.randint(3, 1000, (batch, length))
    eager = training_step("eager", length=length, chunk=chunk, ids=ids)
    first_loss = eager()  # the loss of the initial weights: every mode's first step must give it
    rows: list[Row] = [("training step (AdamW), eager", best_time(eager, repeats=2, warmup=0), "best of 2")]
    for mode in ("blocks", "whole"):
        torch._dynamo.reset()
        step = training_step(mode, length=length, chunk=chunk, ids=ids)
        seconds, loss = timed(step)
        label = f"training step, {TRAINING_MODES[mode]}"
        rows.append((f"{label}: first call", seconds, f"compile + run; loss diff {abs(loss - first_loss).item():.2g}"))
        rows.append((f"{label}: later calls", best_time(step, repeats=2, warmup=0), "best of 2"))
    return rows


def static_rows(*, prefix: int, batch: int, chunk: int | None, steps: int = 16) -> list[Row]:
    """The static decoder's step, eager and compiled: first step (compile included) and later ones."""
    from ..adapters.hf import static_decoder

    length = prefix + 2 * steps + 2
    model = build(chunk=chunk, causal=True, max_length=length)
    ids = torch.randint(3, 1000, (batch, length))
    with torch.no_grad():
        full = model(ids).logits
    rows: list[Row] = []
    for compiled in (False, True):
        torch._dynamo.reset()
        decoder = static_decoder(model, max_length=length, compile=compiled)
        decoder.prefill(ids[:, :prefix])
        seconds, logits = timed(lambda: decoder.step(ids[:, prefix]))
        error = (logits - full[:, prefix]).abs().max().item()
        kind = "compiled" if compiled else "eager"
        rows.append((f"static decoding step, {kind}: first step", seconds, f"max abs diff {error:.2g}"))

        def later() -> None:
            for _ in range(steps):
                decoder.step(ids[:, decoder.position])

        per_step = best_time(later, repeats=2, warmup=0) / steps
        rows.append((f"static decoding step, {kind}: later steps", per_step, f"best of 2 x {steps} steps"))
    return rows


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 0.1 else f"{seconds * 1e3:.3g} ms"


def format_rows(rows: Sequence[Row], *, head: str) -> str:
    lines = [head, "", "| what | time | note |", "|---|---|---|"]
    lines += [f"| {what} | {_duration(seconds)} | {note} |" for what, seconds, note in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--prefix", type=int, default=300, help="decoding: tokens in the cache before the steps")
    parser.add_argument("--chunk", default="256", help="chunk size, or 'none'")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="inductor's cache directory (default: a fresh empty one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    chunk = None if args.chunk == "none" else int(args.chunk)
    with tempfile.TemporaryDirectory(prefix="mega-compile-") as fresh:
        # read by inductor at each compile: set before the first one
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache_dir or fresh
        rows = forward_rows(length=args.length, batch=args.batch, chunk=chunk)
        rows += training_rows(length=args.length, batch=args.batch, chunk=chunk)
        rows += step_rows(prefix=args.prefix, batch=args.batch, chunk=chunk)
        rows += static_rows(prefix=args.prefix, batch=1, chunk=chunk)
    cache = f"inductor cache {args.cache_dir}" if args.cache_dir else "cold inductor cache"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    head = (
        f"{describe_run(threads=args.threads)}; load average {load}; hidden 256, 4 layers, batch {args.batch}, "
        f"length {args.length}, chunk {args.chunk}, fp32, {cache}"
    )
    print(format_rows(rows, head=head))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
