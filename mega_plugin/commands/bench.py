"""``mega-plugin bench``: run the benchmarks and print markdown tables (and write a plot)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

NAME = "bench"
HELP = (
    "Measure forward/training speed and memory against transformers' MEGA and an equal-size Llama, "
    "decoding, and generate(); `startup`: interpreter start with and without the startup hook."
)
SUITES = ("forward", "train", "decode", "generate", "all", "startup")
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
    parser.add_argument(
        "--preset",
        default=None,
        help="forward/train: a paper language model (wikitext103 or enwik8) at its own chunk size instead "
        "of the benchmark model, e.g. --preset wikitext103 --lengths 6144 --batch 1",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case (the best is kept)")
    parser.add_argument("--no-reference", action="store_true", help="skip transformers' deprecated MEGA")
    parser.add_argument("--no-llama", action="store_true", help="skip the equal-size transformers Llama")
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="train: every implementation recomputes each block's activations in the backward (less memory)",
    )
    parser.add_argument(
        "--background-load",
        type=int,
        default=0,
        metavar="N",
        help="run N busy processes (one core each) while measuring every side (forward, train, generate)",
    )
    parser.add_argument("--generate-prompts", type=int, nargs="+", default=[128, 1024], help="generate() prompt lengths")
    parser.add_argument("--generate-batches", type=int, nargs="+", default=[1], help="generate() batch sizes")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generate() produces per case")
    parser.add_argument(
        "--force-reference",
        action="store_true",
        help="run reference cases even when their estimated memory exceeds 70%% of the free RAM (may be killed)",
    )
    parser.add_argument("--output-dir", type=Path, default=None, help="write results.md, results.json, plot.png here")
    parser.add_argument("--contexts", type=int, nargs="+", default=[128, 1024, 8192, 32768], help="decode contexts")
    parser.add_argument("--steps", type=int, default=32, help="decoding steps timed per context")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, as in the issue)")
    parser.add_argument("--startup-runs", type=int, default=30, help="startup: interpreter starts per variant")
    parser.add_argument(
        "--with-transformers", action="store_true", help="startup: also time `import transformers` with and without the hook"
    )


def _check_positive(args: argparse.Namespace) -> None:
    singles = (("--steps", args.steps), ("--batch", args.batch), ("--repeats", args.repeats), ("--threads", args.threads))
    lists = [("--contexts", c) for c in args.contexts] + [("--lengths", n) for n in args.lengths]
    lists += [("--train-lengths", n) for n in args.train_lengths]
    lists += [("--generate-prompts", n) for n in args.generate_prompts]
    lists += [("--generate-batches", n) for n in args.generate_batches]
    for name, value in (*singles, *lists):
        if value <= 0:
            raise SystemExit(f"{name} must be positive, got {value}")
    if args.new_tokens < 2:
        raise SystemExit(f"--new-tokens must be at least 2 (one prefill token is excluded), got {args.new_tokens}")
    if args.background_load < 0:
        raise SystemExit(f"--background-load must be 0 or more, got {args.background_load}")
    if args.preset is not None:
        from ..benchmarks.models import PAPER_PRESETS

        if args.preset not in PAPER_PRESETS:
            raise SystemExit(f"--preset {args.preset!r} is not a paper preset; allowed values: {', '.join(PAPER_PRESETS)}")


def run(args: argparse.Namespace) -> int:
    if args.suite == "startup":  # no torch: the interpreter starts are the measurement
        from ..benchmarks.startup import run_startup_benchmark

        section = run_startup_benchmark(runs=args.startup_runs, with_transformers=args.with_transformers)
        print(section, flush=True)
        if args.output_dir is not None:
            args.output_dir.mkdir(parents=True, exist_ok=True)
            (args.output_dir / "startup.md").write_text(section + "\n")
        return 0
    import torch

    from ..benchmarks.machine import describe_run

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
                with_llama=not args.no_llama,
                background_load=args.background_load,
                force_reference=args.force_reference,
                preset=args.preset,
                checkpointing=args.gradient_checkpointing,
            )
            title = "Forward (eval)" if mode == "forward" else "Training step (forward + backward + AdamW)"
            if mode == "train" and args.gradient_checkpointing:
                title += ", gradient checkpointing (every implementation)"
            model = "hidden 256, 4 layers" if args.preset is None else f"the {args.preset} preset"
            sections.append(f"## {title}, {model}, fp32\n\n{format_suite_table(result)}")
            if args.output_dir is not None:
                args.output_dir.mkdir(parents=True, exist_ok=True)
                (args.output_dir / f"{mode}.json").write_text(
                    json.dumps(
                        {
                            "machine": result.machine,
                            "gemm": dataclasses.asdict(result.gemm),
                            "gemm_end": dataclasses.asdict(result.gemm_end),
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
        machine = describe_run(threads=args.threads)
        sections.append(f"## Decoding (core state), batch 1, hidden 256, 4 layers\n\nMachine: {machine}.\n\n{format_decode_table(results)}")
        print(sections[-1], flush=True)
    if args.suite in ("generate", "all"):
        from ..benchmarks.generate import GENERATORS, format_generate_table, run_generate_benchmark
        from ..benchmarks.machine import measure_read_bandwidth

        generated = run_generate_benchmark(
            prompts=tuple(args.generate_prompts),
            batches=tuple(args.generate_batches),
            new_tokens=args.new_tokens,
            implementations=tuple(g for g in GENERATORS if g not in ("llama", "floor") or not args.no_llama),
            background_load=args.background_load,
        )
        machine = describe_run(threads=args.threads, background_load=args.background_load)
        sections.append(
            f"## generate() decoding, greedy, {args.new_tokens} new tokens, hidden 256, 4 layers\n\n"
            f"Machine: {machine}.\n\n{format_generate_table(generated, bandwidth=measure_read_bandwidth())}"
        )
        print(sections[-1], flush=True)
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "results.md").write_text("\n\n".join(sections) + "\n")
    return 0
