"""``mega_plugin.benchmarks.compile_time``: every row is measured and its compiled outputs match eager.

Inductor's code generation is what the benchmark measures and takes minutes; here ``torch.compile``
is given dynamo's ``eager`` backend, so the test checks the benchmark's plumbing and its parity
notes, not the times.
"""

from __future__ import annotations

import functools
import math
import re

import pytest
import torch

pytest.importorskip("transformers")

from mega_plugin.benchmarks import compile_time  # noqa: E402


@pytest.mark.slow  # ~17 s on 2 cores: the benchmark configuration (hidden 256, 4 layers), traced 7 times
def test_rows_are_measured_and_compiled_outputs_match_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    rows = compile_time.forward_rows(length=16, batch=1, chunk=8)
    rows += compile_time.step_rows(prefix=5, batch=1, chunk=8)
    assert [what for what, _, _ in rows][-4:-1] == [f"decoding step, compiled: position {p}" for p in (5, 6, 7)]
    rows += compile_time.static_rows(prefix=5, batch=1, chunk=8, steps=2)
    assert all(math.isfinite(seconds) and seconds > 0 for _, seconds, _ in rows)
    differences = [float(match.group(1)) for _, _, note in rows if (match := re.search(r"max abs diff (\S+)", note))]
    assert len(differences) == 6 and max(differences) <= 1e-4
    table = compile_time.format_rows(rows, head="head")
    assert table.count("\n| ") == len(rows) + 1  # header row + one row each, no stray pipes


@pytest.mark.slow  # ~10 s: three fresh models each trained one step and more
def test_training_rows_compile_every_mode_to_the_same_first_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    rows = compile_time.training_rows(length=16, batch=1, chunk=8)
    assert [what.split(":")[0] for what, _, _ in rows] == [
        "training step (AdamW), eager",
        *[f"training step, {compile_time.TRAINING_MODES[mode]}" for mode in ("blocks", "whole") for _ in range(2)],
    ]
    differences = [float(match.group(1)) for _, _, note in rows if (match := re.search(r"loss diff (\S+)", note))]
    assert len(differences) == 2 and max(differences) <= 1e-5
    with pytest.raises(ValueError, match="mode='jit'; allowed values: eager, blocks, whole"):
        compile_time.training_step("jit", length=8, chunk=8, ids=torch.zeros(1, 8, dtype=torch.long))
