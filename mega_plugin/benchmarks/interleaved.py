"""Ours and transformers 4.57's deprecated MEGA alternately in one process (fairseq2 environment).

Steadier than ``mega-plugin bench`` on a shared machine: the cases alternate, so a change of
load hits both of them::

    python -m mega_plugin.benchmarks.interleaved --length 8192 --chunk 256 --repeats 3
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Sequence

import torch

from .common import best_time
from .flops import gemm_gflops
from .measure import VOCAB
from .models import build_model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--chunk", type=int, default=256, help="attention chunk; 0 runs without chunking")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    chunk = args.chunk or None
    ours, ours_forward = build_model("ours", chunk_size=chunk, max_length=args.length)
    reference, reference_forward = build_model("reference", chunk_size=chunk, max_length=args.length)
    ours.eval()
    reference.eval()
    tokens = torch.randint(3, VOCAB, (args.batch, args.length), generator=torch.Generator().manual_seed(0))

    cases = {"ours": ours_forward, "reference": reference_forward}
    gemm_before = gemm_gflops()
    best = dict.fromkeys(cases, float("inf"))
    with torch.inference_mode():
        difference = (ours_forward(tokens) - reference_forward(tokens)).abs().max().item()
        print(f"ours: largest difference to the reference {difference:.2e}")
        for _ in range(args.repeats):
            for name, call in cases.items():  # one call each per round: the two alternate
                seconds = best_time(functools.partial(call, tokens), repeats=1, warmup=0)
                best[name] = min(best[name], seconds)
    print(f"GEMM {gemm_before:.0f} GFLOP/s before, {gemm_gflops():.0f} after; best of {args.repeats}")
    for name, seconds in best.items():
        print(f"{name}: {1000 * seconds:.0f} ms, {best['reference'] / seconds:.2f}x the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
