"""One benchmark case measured in the current process: time (best of N) and peak memory.

Peak memory on CPU is the growth of the process's peak resident set (``ru_maxrss``) over
the resident set before the first call, so every case runs in a fresh process
(:mod:`.isolated`); run in a shared process the numbers would only ever grow.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass
from typing import Final

import torch

from .common import best_time
from .models import build_model, enable_checkpointing

MODES: Final = ("forward", "train")
VOCAB: Final = 1000


@dataclass(frozen=True)
class Case:
    """What to measure."""

    implementation: str
    """``"ours"`` or ``"reference"`` (transformers' deprecated MEGA)."""

    mode: str
    """``"forward"`` (eval, no grad) or ``"train"`` (forward, backward of a scalar loss and an
    AdamW step: the whole training step, as a user's loop runs it)."""

    length: int
    chunk_size: int | None
    batch: int
    preset: str | None = None
    """A paper preset's architecture (``wikitext103``, ``enwik8``: :data:`~.models.PAPER_PRESETS`)
    instead of the issue's benchmark model; ``chunk_size`` is then the preset's."""

    checkpointing: bool = False
    """``train`` only: every block recomputes its activations in the backward instead of keeping
    them (ours: ``MegaLayerStack.set_checkpointing``; the Llama and the reference: transformers'
    ``gradient_checkpointing_enable``), which trades a second forward for memory."""


@dataclass
class Measurement:
    """The result of one case; ``error`` is set when it could not run (nothing else is then)."""

    case: Case
    seconds: float | None = None
    peak_mib: float | None = None
    error: str | None = None

    @property
    def tokens_per_second(self) -> float | None:
        return None if self.seconds is None else self.case.batch * self.case.length / self.seconds

    def to_dict(self) -> dict[str, object]:
        return {"case": asdict(self.case), "seconds": self.seconds, "peak_mib": self.peak_mib, "error": self.error}

    @classmethod
    def from_dict(cls, data: dict) -> Measurement:
        return cls(case=Case(**data["case"]), seconds=data["seconds"], peak_mib=data["peak_mib"], error=data["error"])


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def measure_case(case: Case, *, repeats: int, threads: int, seed: int = 0) -> Measurement:
    """Build the model, run once (peak memory), then time ``repeats`` calls and keep the best."""
    if case.mode not in MODES:
        raise ValueError(f"mode={case.mode!r}; allowed values: {', '.join(MODES)}")
    if case.checkpointing and case.mode != "train":
        raise ValueError(f"checkpointing=True needs mode='train', got mode={case.mode!r}")
    torch.set_num_threads(threads)
    model, forward = build_model(
        case.implementation, chunk_size=case.chunk_size, max_length=case.length, seed=seed, preset=case.preset
    )
    generator = torch.Generator().manual_seed(seed + case.length)
    tokens = torch.randint(3, VOCAB, (case.batch, case.length), generator=generator)

    if case.mode == "forward":
        model.eval()

        def call() -> None:
            with torch.inference_mode():
                forward(tokens)

    else:
        model.train()
        if case.checkpointing:
            enable_checkpointing(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def call() -> None:
            hidden = forward(tokens)
            hidden.float().square().mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    before = _resident_mib()
    call()
    peak = max(0.0, _peak_mib() - before)
    return Measurement(case=case, seconds=best_time(call, repeats=repeats, warmup=0), peak_mib=peak)
