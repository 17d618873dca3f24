"""``mega-plugin bench``: run the benchmarks and print markdown tables."""

from __future__ import annotations

import argparse

NAME = "bench"
HELP = "Measure decoding speed and state size (more suites are added as they land)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default="decode", choices=["decode"], help="which benchmark to run")
    parser.add_argument("--contexts", type=int, nargs="+", default=[128, 1024, 8192, 32768], help="context lengths")
    parser.add_argument("--steps", type=int, default=32, help="decoding steps timed per context")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..benchmarking.common import describe_machine
    from ..benchmarking.decode import format_decode_table, run_decode_benchmark

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for name, value in (("--steps", args.steps), *(("--contexts", c) for c in args.contexts)):
        if value <= 0:
            raise SystemExit(f"{name} must be positive, got {value}")
    results = run_decode_benchmark(contexts=tuple(args.contexts), steps=args.steps)
    print(f"Decoding, batch 1, hidden 256, 4 layers ({describe_machine()})\n")
    print(format_decode_table(results))
    return 0
