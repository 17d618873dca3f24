"""Decoding through transformers' ``generate()``: MEGA against an equal-size Llama.

This is the path a Hugging Face user takes: greedy ``generate()`` with the model's own cache
(``MegaCache`` for ours; transformers' ``DynamicCache`` and SDPA for the Llama), batch 1 by
default. The decode rate excludes the prompt: each case times the ``new_tokens - 1`` decoding
steps from the first new token to the last (:class:`StepClock`, a streamer). A third row, a
one-layer width-64 Llama, measures the ``generate`` loop's own cost per token on this machine: no model can beat that floor through ``generate``. The last two
decode the same model natively, outside ``generate``: the backends' ``StaticDecoder`` (fixed
buffers, a few dozen ops per layer), eager and as one ``torch.compile`` graph.

    mega-plugin bench generate --generate-prompts 128 1024 --new-tokens 128
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor, nn

from ..backends.static_decoding import StaticDecoder
from .background import busy_processes
from .common import Progress, benchmark_config
from .llama import build_equal_llama, non_embedding_parameters

GENERATORS: Final = ("ours", "llama", "floor", "static", "static-compiled")
STATIC: Final = ("static", "static-compiled")
"""Our model decoded by :class:`~mega_plugin.backends.static_decoding.StaticDecoder` (not ``generate()``)."""


@dataclass(frozen=True)
class GenerateResult:
    implementation: str
    prompt: int
    batch: int
    new_tokens: int
    tokens_per_second: float | None
    error: str | None = None
    weight_bytes: int = 0
    """Bytes of the model's parameters: what one decoding step at batch 1 reads at least once."""


def build_generator(
    implementation: str, *, max_length: int, chunk_size: int = 256, seed: int = 0
) -> nn.Module | StaticDecoder:
    """A causal LM with ``generate()`` (our HF MegaForCausalLM, the equal Llama, the floor model),
    or our model's :class:`StaticDecoder` (``static``, ``static-compiled``)."""
    if implementation not in GENERATORS:
        raise ValueError(f"implementation={implementation!r}; allowed values: {', '.join(GENERATORS)}")
    from ..adapters.hf import MegaConfig, MegaForCausalLM

    config = benchmark_config(chunk_size=chunk_size, causal=True)
    torch.manual_seed(seed)
    ours = MegaForCausalLM(MegaConfig.from_core(config, eos_token_id=None, pad_token_id=0)).eval()
    if implementation == "ours":
        return ours
    if implementation in STATIC:
        from ..adapters.hf import static_decoder

        return static_decoder(ours, max_length=max_length, compile=implementation == "static-compiled")
    if implementation == "llama":
        mega_parameters = non_embedding_parameters(ours.mega)
        return build_equal_llama(config, mega_parameters=mega_parameters, max_length=max_length, causal_lm=True).eval()
    # one layer, one head of 64: the smallest Llama; its cost per token is the loop's own
    floor = dataclasses.replace(benchmark_config(chunk_size=chunk_size, causal=True, num_layers=1), hidden_size=64)
    return build_equal_llama(floor, mega_parameters=64 * 64 * 8, max_length=max_length, causal_lm=True).eval()


class StepClock:
    """A ``generate()`` streamer that notes when each put arrives: the prompt first, then every new
    token. The decoding time is that from the first new token to the last, so the prompt's time
    never enters, however long it is (a difference of two whole runs drowned 31 steps in the
    noise of a 32k-token prefill)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def decode_rate(model: nn.Module | StaticDecoder, *, prompt: int, batch: int, new_tokens: int, repeats: int) -> float:
    """Generated tokens per second over ``new_tokens - 1`` greedy steps (the prompt excluded), best of ``repeats``."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens={new_tokens}; allowed values: 2 or more")
    ids = torch.randint(3, 1000, (batch, prompt), generator=torch.Generator().manual_seed(prompt))
    steps = new_tokens - 1

    def decoding_seconds() -> float:
        if isinstance(model, StaticDecoder):
            token = model.prefill(ids).argmax(dim=-1)
            start = time.perf_counter()
            for _ in range(steps):
                token = model.step(token).argmax(dim=-1)
            return time.perf_counter() - start
        clock = StepClock()
        options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None)
        model.generate(ids, attention_mask=torch.ones_like(ids), streamer=clock, **options)
        if len(clock.times) != new_tokens + 1:  # the prompt, then one put per new token
            raise RuntimeError(f"generate() reported {len(clock.times) - 1} new tokens, expected {new_tokens}")
        return clock.times[-1] - clock.times[1]

    with torch.inference_mode():
        decoding_seconds()  # warm-up: first-call costs, a compile
        best = min(decoding_seconds() for _ in range(repeats))
    return batch * steps / max(best, 1e-9)


def run_generate_benchmark(
    *,
    prompts: tuple[int, ...],
    batches: tuple[int, ...] = (1,),
    new_tokens: int = 128,
    implementations: tuple[str, ...] = GENERATORS,
    background_load: int = 0,
    repeats: int = 2,
) -> list[GenerateResult]:
    """Every (implementation, prompt, batch); a failing case comes back with its error."""
    results = []
    progress = Progress(total=len(implementations) * len(prompts) * len(batches), label="generate")
    with busy_processes(background_load) if background_load else contextlib.nullcontext():
        for implementation in implementations:
            model = build_generator(implementation, max_length=max(prompts) + new_tokens)
            for prompt in prompts:
                for batch in batches:
                    progress.step(f"{implementation} prompt={prompt} batch={batch}")
                    try:
                        rate = decode_rate(model, prompt=prompt, batch=batch, new_tokens=new_tokens, repeats=repeats)
                        results.append(
                            GenerateResult(implementation, prompt, batch, new_tokens, rate, weight_bytes=weight_bytes(model))
                        )
                    except Exception as error:  # shown in the table, not hidden
                        message = f"{type(error).__name__}: {error}"[:200]
                        results.append(GenerateResult(implementation, prompt, batch, new_tokens, None, error=message))
    return results


def weight_bytes(model: nn.Module | StaticDecoder) -> int:
    """Bytes of ``model``'s distinct parameters (tied tables counted once; a decoder: 0, not shown)."""
    if isinstance(model, StaticDecoder):
        return 0
    unique = {parameter.data_ptr(): parameter for parameter in model.parameters()}
    return sum(parameter.numel() * parameter.element_size() for parameter in unique.values())


def format_generate_table(results: list[GenerateResult], *, bandwidth: float | None = None) -> str:
    """One row per (prompt, batch): tokens/s of each implementation, ours / Llama and static compiled / Llama.

    With ``bandwidth`` (GB/s, :func:`~.machine.measure_read_bandwidth`) a last column gives the
    bound it sets on our rate: batch x bandwidth / our weight bytes (each step reads every
    weight once; the cache, the activations and the loop come on top).
    """
    def find(implementation: str, prompt: int, batch: int) -> GenerateResult | None:
        return next((r for r in results if (r.implementation, r.prompt, r.batch) == (implementation, prompt, batch)), None)

    def ratio(numerator: GenerateResult | None, denominator: GenerateResult | None) -> str:
        rates = (numerator and numerator.tokens_per_second, denominator and denominator.tokens_per_second)
        return f"{rates[0] / rates[1]:.2f}x" if rates[0] and rates[1] else "-"

    def cell(result: GenerateResult | None) -> str:
        if result is None:
            return "-"
        return result.error if result.tokens_per_second is None else f"{result.tokens_per_second:.0f}"

    header = (
        "| prompt | batch | ours tok/s | Llama tok/s | ours / Llama | generate floor tok/s "
        "| static tok/s | static compiled tok/s | static compiled / Llama |"
    )
    if bandwidth is not None:
        header += f" weight-read bound at {bandwidth:.1f} GB/s, tok/s |"
    lines = [header, "|---" * header.count(" |") + "|"]
    for prompt, batch in dict.fromkeys((r.prompt, r.batch) for r in results):
        ours, llama = find("ours", prompt, batch), find("llama", prompt, batch)
        compiled = find("static-compiled", prompt, batch)
        row = (
            f"| {prompt} | {batch} | {cell(ours)} | {cell(llama)} | {ratio(ours, llama)} | {cell(find('floor', prompt, batch))} "
            f"| {cell(find('static', prompt, batch))} | {cell(compiled)} | {ratio(compiled, llama)} |"
        )
        if bandwidth is not None:
            bound = batch * bandwidth * 1e9 / ours.weight_bytes if ours and ours.weight_bytes else None
            row += f" {bound:.0f} |" if bound else " - |"
        lines.append(row)
    return "\n".join(lines)
