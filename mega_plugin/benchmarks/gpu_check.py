"""The GPU check: parity on the device against CPU float64, autocast, and the benchmarks.

One command for a machine with a CUDA device (``scripts/gpu_check.sh`` runs it in the hf
environment and stays under 5 minutes)::

    python -m mega_plugin.benchmarks.gpu_check --device cuda --output gpu-check.md

1. Parity: every combination of attention function, chunking, relative bias, norm, causal
   or bidirectional and padding, run on the device in fp32 (the kernels ``auto`` picks there)
   against the same weights on the CPU in float64 with the reference kernels; outputs and
   the input-embedding gradient within ``--tolerance`` (1e-4).
2. Autocast: bf16 and fp16 forward and backward stay finite and near fp32.
3. Benchmarks: forward and training step of the benchmark model and of the equal-size Llama
   on the device (tokens/s, peak memory), MFU against a GEMM measured on the device.

On a machine without CUDA, ``--device cpu`` runs the same checks on the CPU (fp32 against
fp64), which is how the test suite keeps this script working.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..core.backbone import MegaBackbone
from ..core.config import MegaCoreConfig
from .common import benchmark_config
from .flops import model_flops_per_token
from .llama import build_equal_llama, llama_unavailable, non_embedding_parameters
from .models import build_ours

ATTENTION = ("softmax", "laplace", "relu2")
CHUNKS = (None, 8)
BIASES = ("rotary", "simple")
NORMS = ("layernorm", "scalenorm", "rmsnorm")
DIRECTIONS = ("bidirectional", "causal")


@dataclass(frozen=True)
class ParityCase:
    attention: str
    chunk: int | None
    bias: str
    norm: str
    direction: str
    padded: bool

    def config(self) -> MegaCoreConfig:
        causal = self.direction == "causal"
        return MegaCoreConfig(
            vocab_size=50, hidden_size=32, intermediate_size=48, nffn_hidden_size=40,
            shared_representation_size=16, ema_projection_size=4, num_hidden_layers=2,
            bidirectional=not causal, is_decoder=causal, use_chunking=self.chunk is not None,
            chunk_size=self.chunk or -1, attention_activation=self.attention,
            relative_positional_bias=self.bias, normalization_type=self.norm, max_positions=64,
            dropout_prob=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            nffn_activation_dropout_prob=0.0,
        )  # fmt: skip


def parity_cases() -> list[ParityCase]:
    grid = itertools.product(ATTENTION, CHUNKS, BIASES, NORMS, DIRECTIONS, (False, True))
    return [ParityCase(*values) for values in grid]


def _inputs(case: ParityCase, *, length: int = 21) -> tuple[Tensor, Tensor | None]:
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 50, (2, length), generator=generator)
    if not case.padded:
        return ids, None
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, -5:] = 0  # right padding in the second row (causal models pad on the right)
    return ids, mask


def parity_error(case: ParityCase, device: torch.device) -> float:
    """Largest difference, relative to the output scale, of outputs and embedding gradients."""
    torch.manual_seed(0)
    config = case.config()
    truth = MegaBackbone(dataclasses.replace(config, ema_kernel="reference", attention_kernel="reference")).double()
    ours = build_ours(config)
    ours.load_state_dict({k: v.float() for k, v in truth.state_dict().items()})
    ours.to(device)
    ids, mask = _inputs(case)

    def run(model: MegaBackbone, dev: torch.device) -> tuple[Tensor, Tensor]:
        model.zero_grad(set_to_none=True)
        out = model(ids.to(dev), attention_mask=None if mask is None else mask.to(dev)).hidden
        keep = torch.ones_like(out) if mask is None else mask.to(dev).unsqueeze(-1).to(out.dtype)
        (out * keep).square().mean().backward()
        return (out * keep).detach().cpu().double(), model.embedding_layer.word_embeddings.weight.grad.cpu().double()

    want_out, want_grad = run(truth, torch.device("cpu"))
    got_out, got_grad = run(ours, device)
    errors = [(got - want).abs().max() / want.abs().max().clamp_min(1e-6) for got, want in ((got_out, want_out), (got_grad, want_grad))]
    return max(float(e) for e in errors)


def autocast_errors(device: torch.device) -> dict[str, str]:
    """bf16 / fp16 autocast forward + backward on the device: relative error to fp32, or why not."""
    torch.manual_seed(0)
    model = build_ours(benchmark_config(chunk_size=64, causal=True, num_layers=2)).to(device)
    ids = torch.randint(3, 1000, (2, 200), device=device)
    with torch.no_grad():
        want = model(ids).hidden.float()
    found: dict[str, str] = {}
    for dtype in (torch.bfloat16, torch.float16):
        name = str(dtype).removeprefix("torch.")
        try:
            with torch.autocast(device_type=device.type, dtype=dtype):
                out = model(ids).hidden
            out.float().square().mean().backward()
            grads_finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
            model.zero_grad(set_to_none=True)
            relative = float((out.float() - want).abs().max() / want.abs().max())
            verdict = "ok" if torch.isfinite(out).all() and grads_finite and relative < 0.1 else "FAILED"
            found[name] = f"{verdict}: relative error {relative:.2e}, gradients {'finite' if grads_finite else 'NOT finite'}"
        except Exception as error:  # reported: whether autocast works is the question
            found[name] = f"FAILED: {type(error).__name__}: {error}"[:200]
    return found


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(call: Callable[[], object], device: torch.device, *, repeats: int) -> float:
    call()
    _synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def device_gemm_gflops(device: torch.device, *, size: int = 4096) -> float:
    """fp32 GEMM rate on the device (TF32 off: the model runs IEEE fp32 too)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    return 2.0 * size**3 / _best_seconds(lambda: a @ b, device, repeats=3) / 1e9


def benchmark_rows(device: torch.device, *, length: int, chunk: int, batch: int, repeats: int) -> list[str]:
    """Markdown rows: forward and train of ours and the Llama on ``device``."""
    config = benchmark_config(chunk_size=chunk, causal=False, max_positions=length)
    torch.manual_seed(0)
    ours = build_ours(config).to(device)
    models: dict[str, Callable[[Tensor], Tensor]] = {"ours": lambda ids: ours(ids).hidden}
    if llama_unavailable() is None:
        llama = build_equal_llama(config, mega_parameters=non_embedding_parameters(ours), max_length=length, causal_lm=False)
        llama = llama.to(device)
        models["llama"] = lambda ids: llama(ids).last_hidden_state
    ids = torch.randint(3, 1000, (batch, length), device=device)
    gemm = device_gemm_gflops(device)
    flops = model_flops_per_token(config, length=length, chunk_size=chunk) * batch * length
    rows = []
    for name, forward in models.items():
        for mode in ("forward", "train"):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)

            def step() -> None:
                if mode == "forward":
                    with torch.inference_mode():
                        forward(ids)
                else:
                    forward(ids).square().mean().backward()

            seconds = _best_seconds(step, device, repeats=repeats)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
            work = flops * (3.0 if mode == "train" else 1.0)
            mfu = f"{100 * work / seconds / 1e9 / gemm:.0f}%" if name == "ours" else "-"
            rows.append(f"| {name} | {mode} | {length} | {batch * length / seconds / 1e3:.1f}k | {peak:.0f} | {mfu} |")
    rows.append(f"\nDevice fp32 GEMM: {gemm:.0f} GFLOP/s.")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the point of this script) or cpu (a dry run)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-bench", action="store_true", help="parity and autocast only")
    parser.add_argument("--limit-cases", type=int, default=None, help="run only the first N parity cases")
    parser.add_argument("--output", default=None, help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu for a dry run", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"# GPU check on {name} (torch {torch.__version__})", "", "## Parity against CPU float64", ""]
    cases = parity_cases()[: args.limit_cases]
    failures = []
    worst = 0.0
    for case in cases:
        error = parity_error(case, device)
        worst = max(worst, error)
        if not error <= args.tolerance:
            failures.append(f"- {case}: {error:.2e}")
    lines.append(f"{len(cases)} configurations, worst relative error {worst:.2e}, {len(failures)} above {args.tolerance:g}")
    lines.extend(failures)
    lines += ["", "## Autocast", ""] + [f"- {k}: {v}" for k, v in autocast_errors(device).items()]
    if not args.skip_bench:
        lines += ["", "## Benchmarks (fp32)", "", "| model | mode | length | tokens/s | peak MiB | MFU |", "|---|---|---|---|---|---|"]
        lines += benchmark_rows(device, length=args.length, chunk=args.chunk, batch=args.batch, repeats=args.repeats)
    report = "\n".join(lines)
    print(report)
    if args.output:
        with open(args.output, "w") as out:
            out.write(report + "\n")
    autocast_failed = "FAILED" in "\n".join(lines)
    return 1 if failures or autocast_failed else 0


if __name__ == "__main__":
    sys.exit(main())
