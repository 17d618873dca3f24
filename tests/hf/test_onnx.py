"""ONNX export of the encoder heads (``torch.onnx.export(dynamo=True)``) run by onnxruntime.

Correctness bar: onnxruntime, fed *new* inputs (other values, another batch size, padded and
unpadded masks), gives the eager model's outputs within 1e-4 (fp32). The hf environment pins
onnx, onnxruntime and onnxscript (scripts/bootstrap_envs.sh, the ``onnx`` extra); the fairseq2
environment does not install them (fairseq2 0.8.1 pins its own stack and ONNX does not concern
the parity oracle), so these tests skip there: export itself is covered there by test_export.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("onnxscript", reason="the ONNX exporter needs onnxscript (installed in the hf environment)")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is installed in the hf environment only")

from mega_hf_helpers import HEADS_BY_ID, NO_DROPOUT, TINY, build_ours, head_kwargs, make_batch, max_diff  # noqa: E402

CHUNK = 4
LENGTH = 10
TOLERANCE = 1e-4
SETTINGS: dict[str, Any] = {
    **TINY,
    **NO_DROPOUT,
    "use_chunking": True,
    "chunk_size": CHUNK,
    "add_token_type_embeddings": True,
}
ENCODER_HEADS = ("Model", "MaskedLM", "SeqClsSingleLabel", "MultipleChoice", "TokenClassification", "QuestionAnswering")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@pytest.mark.parametrize("head_id", ENCODER_HEADS)
def test_onnxruntime_runs_new_inputs_like_eager(head_id: str, tmp_path: Path) -> None:
    head = HEADS_BY_ID[head_id]
    settings = head_kwargs(head, SETTINGS)
    model = build_ours(head, settings)

    def inputs(batch: int, seed: int, padded: bool = True) -> dict[str, torch.Tensor]:
        made = make_batch(head, settings, length=LENGTH, padded=padded, batch=batch, seed=seed)
        return {name: made.kwargs[name] for name in INPUT_NAMES}

    batch = torch.export.Dim("batch", max=64)
    program = torch.onnx.export(
        model,
        (),
        kwargs=inputs(3, 1),
        dynamic_shapes={name: {0: batch} for name in INPUT_NAMES},
        dynamo=True,
        verbose=False,
    )
    path = tmp_path / f"{head_id}.onnx"
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [entry.name for entry in session.get_inputs()] == list(INPUT_NAMES)
    for size, seed, padded in ((3, 5, True), (5, 6, True), (2, 7, False)):
        fresh = inputs(size, seed, padded)
        got = session.run(None, {name: tensor.numpy() for name, tensor in fresh.items()})
        with torch.no_grad():
            expected = [value for value in model(**fresh).values() if isinstance(value, torch.Tensor)]
        assert len(got) == len(expected) > 0
        for mine, theirs in zip(got, expected):
            assert max_diff(torch.from_numpy(mine), theirs) <= TOLERANCE
