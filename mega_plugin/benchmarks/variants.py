"""Our forward in three execution variants, side by side: fp32 eager, bf16 autocast, torch.compile.

The issue's targets are fp32 eager (the default); this script answers whether bf16 autocast
on CPU and ``torch.compile`` help, on the benchmark configuration, in one process on the same
tokens. It also reports how far the bf16 output is from fp32 and checks that the compiled
model returns what eager returns.

    python -m mega_plugin.benchmarks.variants --length 8192 --chunk 256 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import torch

from .common import best_time
from .flops import gemm_gflops
from .models import build_model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--chunk", default="256", help="chunk size, or 'none'")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (needs a C compiler)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    chunk = None if args.chunk == "none" else int(args.chunk)
    model, forward = build_model("ours", chunk_size=chunk, max_length=args.length)
    model.eval()
    tokens = torch.randint(0, 1000, (args.batch, args.length))
    rows: list[tuple[str, float, str]] = []
    # Each variant runs once untimed first (its output is checked; compilation happens there),
    # so the timed repeats need no further warm-up.
    with torch.no_grad():
        reference = forward(tokens)
        rows.append(("fp32 eager", best_time(lambda: forward(tokens), repeats=args.repeats, warmup=0), "-"))

        def autocast_forward() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return forward(tokens)

        error = (autocast_forward().float() - reference).abs().max().item()
        rows.append(("bf16 autocast", best_time(autocast_forward, repeats=args.repeats, warmup=0), f"max |bf16 - fp32| = {error:.3g}"))
        if not args.no_compile:
            compiled = torch.compile(model)
            try:
                got = compiled(tokens).hidden
                error = (got - reference).abs().max().item()
                seconds = best_time(lambda: compiled(tokens), repeats=args.repeats, warmup=0)
                rows.append(("torch.compile fp32", seconds, f"max |compiled - eager| = {error:.3g}"))
            except Exception as failure:  # reported, not hidden: compile support is what is being checked
                rows.append(("torch.compile fp32", float("nan"), f"failed: {type(failure).__name__}: {failure}"[:200]))
    gemm = gemm_gflops()
    load = os.getloadavg()[0]
    tokens_total = args.batch * args.length
    print(f"length {args.length}, chunk {chunk}, batch {args.batch}, {args.threads} threads, torch {torch.__version__}")
    print(f"GEMM {gemm:.0f} GFLOP/s, load average {load:.2f}")
    print("| variant | ms | tokens/s | note |")
    print("|---|---|---|---|")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds * 1e3:.0f} | {tokens_total / seconds / 1e3:.1f}k | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
