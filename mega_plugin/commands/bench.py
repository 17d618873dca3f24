"""``mega-plugin bench``: run the benchmarks and print markdown tables (and write a plot)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "bench"
HELP = "Measure forward/training speed and memory (against transformers' MEGA when installed) and decoding."
SUITES = ("forward", "train", "decode", "all")
DEFAULT_LENGTHS = (512, 2048, 8192, 16384, 32768)


def _chunk(value: str) -> int | None:
    if value.lower() == "none":
        return None
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"--chunks takes positive sizes or 'none', got {value}")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default="decode", choices=SUITES, help="which benchmark to run")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS), help="forward/train lengths")
    parser.add_argument("--chunks", type=_chunk, nargs="+", default=[256, None], help="chunk sizes ('none': unchunked)")
    parser.add_argument("--train-lengths", type=int, nargs="+", default=[4096], help="lengths of the training step")
    parser.add_argument("--batch", type=int, default=4, help="batch size of forward/train")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case (the best is kept)")
    parser.add_argument("--no-reference", action="store_true", help="skip transformers' deprecated MEGA")
    parser.add_argument(
        "--force-reference",
        action="store_true",
        help="run reference cases even when their estimated memory exceeds 70%% of the free RAM (may be killed)",
    )
    parser.add_argument("--output-dir", type=Path, default=None, help="write results.md, results.json, plot.png here")
    parser.add_argument("--contexts", type=int, nargs="+", default=[128, 1024, 8192, 32768], help="decode contexts")
    parser.add_argument("--steps", type=int, default=32, help="decoding steps timed per context")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, as in the issue)")


def _check_positive(args: argparse.Namespace) -> None:
    singles = (("--steps", args.steps), ("--batch", args.batch), ("--repeats", args.repeats), ("--threads", args.threads))
    lists = [("--contexts", c) for c in args.contexts] + [("--lengths", n) for n in args.lengths]
    lists += [("--train-lengths", n) for n in args.train_lengths]
    for name, value in (*singles, *lists):
        if value <= 0:
            raise SystemExit(f"{name} must be positive, got {value}")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..benchmarks.common import describe_machine

    _check_positive(args)
    torch.set_num_threads(args.threads)
    sections: list[str] = []
    if args.suite in ("forward", "train", "all"):
        from ..benchmarks.forward import run_suite
        from ..benchmarks.report import format_suite_table, save_plot

        runs = []
        if args.suite in ("forward", "all"):
            runs.append(("forward", tuple(args.lengths)))
        if args.suite in ("train", "all"):
            runs.append(("train", tuple(args.train_lengths)))
        for mode, lengths in runs:
            result = run_suite(
                lengths=lengths,
                chunk_sizes=tuple(args.chunks),
                modes=(mode,),
                batch=args.batch,
                repeats=args.repeats,
                threads=args.threads,
                with_reference=not args.no_reference,
                force_reference=args.force_reference,
            )
            title = "Forward (eval)" if mode == "forward" else "Training step (forward + backward)"
            sections.append(f"## {title}, hidden 256, 4 layers, fp32 ({describe_machine()})\n\n{format_suite_table(result)}")
            if args.output_dir is not None:
                args.output_dir.mkdir(parents=True, exist_ok=True)
                (args.output_dir / f"{mode}.json").write_text(
                    json.dumps(
                        {
                            "gemm_gflops": result.gemm_gflops,
                            "gemm_gflops_end": result.gemm_gflops_end,
                            "load_averages": list(result.load_averages),
                            "measurements": [m.to_dict() for m in result.measurements],
                        },
                        indent=1,
                    )
                )
                if mode == "forward":
                    sections.append(save_plot(result, args.output_dir / "forward.png"))
            print(sections[-1] if mode == "train" else "\n\n".join(sections[-2:] if args.output_dir else sections[-1:]), flush=True)
    if args.suite in ("decode", "all"):
        from ..benchmarks.decode import format_decode_table, run_decode_benchmark

        results = run_decode_benchmark(contexts=tuple(args.contexts), steps=args.steps)
        sections.append(f"## Decoding, batch 1, hidden 256, 4 layers ({describe_machine()})\n\n{format_decode_table(results)}")
        print(sections[-1], flush=True)
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "results.md").write_text("\n\n".join(sections) + "\n")
    return 0
