"""Markdown tables and the PNG plot of a :class:`~.forward.SuiteResult`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .forward import SuiteResult, useful_gflops
from .measure import Measurement


def _ms(m: Measurement | None) -> str:
    if m is None:
        return "-"
    if m.error is not None:
        return m.error
    return f"{1000 * m.seconds:.0f}"


def _tokens(m: Measurement | None) -> str:
    rate = None if m is None else m.tokens_per_second
    return "-" if rate is None else f"{rate / 1000:.1f}k"


def _mib(m: Measurement | None) -> str:
    return "-" if m is None or m.peak_mib is None else f"{m.peak_mib:.0f}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def _memory_ratio(reference_mib: float | None, ours_mib: float | None) -> str:
    """"4.00x less" when ours needs less memory, "1.33x more" when it needs more."""
    if not reference_mib or not ours_mib:
        return "-"
    if ours_mib <= reference_mib:
        return f"{reference_mib / ours_mib:.2f}x less"
    return f"{ours_mib / reference_mib:.2f}x more"


def _share(gflops: float | None, gemm: float | None) -> str:
    return "-" if gflops is None or not gemm else f"{100 * gflops / gemm:.0f}%"


def format_suite_table(result: SuiteResult) -> str:
    """One row per (mode, chunk, length): ours, the reference and the equal-size Llama side by
    side, with speed ratios (ours / other), and our useful GFLOP/s as a share of both GEMMs."""
    gemm, end = result.gemm, result.gemm_end
    yardstick = gemm.higher(end)
    lines = [
        f"Machine: {result.machine}.",
        f"{gemm.describe()} before the cases; {end.describe()} after (shares: the higher of the two); "
        f"load average {result.load_averages[0]:.2f} before, {result.load_averages[1]:.2f} after; "
        f"batch {result.batch}, best of {result.repeats}.",
        "",
        "| mode | chunk | length | ours ms | ours tok/s | ours MiB | ref tok/s | ref MiB | vs ref | memory vs ref "
        "| Llama tok/s | Llama MiB | vs Llama | ours GFLOP/s | % of BLAS GEMM | % of oneDNN GEMM |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = []
    for m in result.measurements:
        key = (m.case.mode, m.case.chunk_size, m.case.length)
        if m.case.implementation != "llama" and key not in keys:
            keys.append(key)
    for mode, chunk, length in keys:
        ours = result.find("ours", mode, length, chunk)
        reference = result.find("reference", mode, length, chunk)
        llama = result.find("llama", mode, length, chunk)
        gflops = None if ours is None else useful_gflops(ours)
        ours_rate = ours and ours.tokens_per_second
        cells = [
            mode,
            str(chunk or "none"),
            str(length),
            _ms(ours),
            _tokens(ours),
            _mib(ours),
            _tokens(reference) if reference is None or reference.error is None else reference.error,
            _mib(reference),
            _ratio(ours_rate, reference and reference.tokens_per_second),
            _memory_ratio(reference and reference.peak_mib, ours and ours.peak_mib),
            _tokens(llama) if llama is None or llama.error is None else llama.error,
            _mib(llama),
            _ratio(ours_rate, llama and llama.tokens_per_second),
            "-" if gflops is None else f"{gflops:.0f}",
            _share(gflops, yardstick.blas),
            _share(gflops, yardstick.onednn),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.extend(f"\nNote: {note}" for note in result.notes)
    return "\n".join(lines)


def save_plot(result: SuiteResult, path: Path) -> str:
    """Tokens/s and peak memory versus length (forward mode); returns what happened, in words."""
    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed: no PNG written (pip install matplotlib, or the 'dev' extra)"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[tuple[str, int | None], list[Measurement]] = {}
    for m in result.measurements:
        if m.case.mode == "forward" and m.error is None:
            series.setdefault((m.case.implementation, m.case.chunk_size), []).append(m)
    for (implementation, chunk), points in sorted(series.items(), key=lambda item: str(item[0])):
        points.sort(key=lambda m: m.case.length)
        lengths = [m.case.length for m in points]
        label = f"{implementation}, chunk {chunk or 'none'}"
        style = "-" if implementation == "ours" else "--"
        speed_axis.plot(lengths, [m.tokens_per_second for m in points], style, marker="o", label=label)
        memory_axis.plot(lengths, [m.peak_mib for m in points], style, marker="o", label=label)
    for axis, title in ((speed_axis, "forward tokens / s"), (memory_axis, "peak memory growth (MiB)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("sequence length")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    memory_axis.set_yscale("log")
    speed_axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return f"plot written to {path}"
