"""Graph capture of the HF heads: ``torch.export`` of every head and of a decoding step with a
``MegaCache``, ``torch.compile(fullgraph=True)`` of forward (and backward) and of a decoding step.

Correctness bar: the captured graph, run on *new* inputs (other values, other batch sizes, padded
and unpadded masks), gives the eager model's outputs (<= 1e-5 fp32); a captured decoding step
gives the logits of a full eager forward over the prefix (<= 1e-4), as the eager cache does.
Compiles use dynamo's ``aot_eager`` backend (full capture and AOT autograd, no code generation) to
keep each test around a second; inductor's compile time is measured by ``mega-plugin bench compile``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn

pytest.importorskip("transformers")

from mega_hf_helpers import HEADS_BY_ID, NO_DROPOUT, TINY, Head, build_ours, head_kwargs, make_batch, max_diff  # noqa: E402

from mega_plugin.adapters.hf import MegaCache  # noqa: E402
from mega_plugin.adapters.hf.modeling_lm import CACHE_KEYWORD  # noqa: E402

CHUNK = 4
LENGTH = 10
TOLERANCE = 1e-5
STEP_TOLERANCE = 1e-4
SETTINGS: dict[str, Any] = {
    **TINY,
    **NO_DROPOUT,
    "use_chunking": True,
    "chunk_size": CHUNK,
    "add_token_type_embeddings": True,
}
EXPORTED_HEADS = (
    "Model",
    "CausalLM",
    "MaskedLM",
    "SeqClsSingleLabel",
    "MultipleChoice",
    "TokenClassification",
    "QuestionAnswering",
)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def settings_for(head: Head) -> dict[str, Any]:
    extra = {"is_decoder": True, "bidirectional": False} if head.id == "CausalLM" else {}
    return head_kwargs(head, {**SETTINGS, **extra})


def inputs(head: Head, *, batch: int, seed: int, padded: bool = True) -> dict[str, Tensor]:
    made = make_batch(head, settings_for(head), length=LENGTH, padded=padded, batch=batch, seed=seed)
    return {name: made.kwargs[name] for name in INPUT_NAMES}


def outputs_of(output: Any) -> list[Tensor]:
    # a ModelOutput or the exported module's tuple / pytree output: its tensors in order
    values = output.values() if hasattr(output, "values") else output
    return [value for value in values if isinstance(value, Tensor)]


def assert_same(captured: Any, eager: Any, tolerance: float) -> None:
    got, expected = outputs_of(captured), outputs_of(eager)
    assert len(got) == len(expected) > 0
    for mine, theirs in zip(got, expected):
        assert max_diff(mine, theirs) <= tolerance


@pytest.mark.parametrize("head_id", EXPORTED_HEADS)
def test_export_every_head_runs_new_inputs_like_eager(head_id: str) -> None:
    head = HEADS_BY_ID[head_id]
    model = build_ours(head, settings_for(head))
    example = inputs(head, batch=3, seed=1)
    batch = torch.export.Dim("batch", max=64)
    program = torch.export.export(
        model, (), kwargs=example, dynamic_shapes={name: {0: batch} for name in INPUT_NAMES}
    )
    exported = program.module()
    for size, seed, padded in ((3, 5, True), (5, 6, True), (2, 7, False)):
        fresh = inputs(head, batch=size, seed=seed, padded=padded)
        with torch.no_grad():
            assert_same(exported(**fresh), model(**fresh), TOLERANCE)
    # eager keeps the value checks the graph left out
    bad = dict(example, input_ids=example["input_ids"].clone().fill_(SETTINGS["vocab_size"]))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, vocab_size=60\)"):
        model(**bad)


class DecodingStep(nn.Module):
    """One cached decoding step as a module: (ids (B, T), cache) -> (logits (B, T, V), new cache)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, cache: MegaCache) -> tuple[Tensor, MegaCache]:
        output = self.model(input_ids, use_cache=True, **{CACHE_KEYWORD: cache})
        return output.logits, getattr(output, CACHE_KEYWORD)


def causal_model(**overrides: Any) -> nn.Module:
    head = HEADS_BY_ID["CausalLM"]
    return build_ours(head, {**settings_for(head), **overrides})


def prefix_cache(model: nn.Module, tokens: Tensor, length: int) -> MegaCache:
    with torch.no_grad():
        return getattr(model(tokens[:, :length], use_cache=True), CACHE_KEYWORD)


@pytest.mark.parametrize("prefix", [5, CHUNK], ids=["mid-chunk", "at-boundary"])
def test_export_a_decoding_step_with_a_cache(prefix: int) -> None:
    model = causal_model()
    tokens = torch.randint(3, SETTINGS["vocab_size"], (2, prefix + 2))
    program = torch.export.export(DecodingStep(model), (tokens[:, prefix : prefix + 1], prefix_cache(model, tokens, prefix)))
    step = program.module()
    # other prompts: the graph holds no value of the example's cache
    for seed in (1, 2):
        torch.manual_seed(seed)
        other = torch.randint(3, SETTINGS["vocab_size"], (2, prefix + 2))
        with torch.no_grad():
            full = model(other).logits
        logits, cache = step(other[:, prefix : prefix + 1], prefix_cache(model, other, prefix))
        assert max_diff(logits[:, 0], full[:, prefix]) <= STEP_TOLERANCE
        assert isinstance(cache, MegaCache) and cache.get_seq_length() == prefix + 1
        with torch.no_grad():  # the exported step's cache continues in eager
            after = model(other[:, prefix + 1 :], use_cache=True, **{CACHE_KEYWORD: cache}).logits
        assert max_diff(after[:, 0], full[:, prefix + 1]) <= STEP_TOLERANCE
    # the graph is specialised on the cache's position (its keys' length): another one is refused
    with pytest.raises(ValueError, match="tree spec"):
        step(tokens[:, prefix + 1 : prefix + 2], prefix_cache(model, tokens, prefix + 1))


def scalar_of(output: Any) -> Tensor:
    # the loss where the head has one (MegaModel has none): what backward starts from
    return output.loss if getattr(output, "loss", None) is not None else sum(t.sum() for t in outputs_of(output))


COMPILED_HEADS = ("Model", "MaskedLM", "SeqClsSingleLabel", "MultipleChoice", "QuestionAnswering")


@pytest.mark.parametrize("head_id", COMPILED_HEADS)
def test_compile_fullgraph_forward_and_backward(head_id: str) -> None:
    head = HEADS_BY_ID[head_id]
    model = build_ours(head, settings_for(head)).train()  # dropout 0: train mode is deterministic
    made = make_batch(head, settings_for(head), length=LENGTH, batch=3, seed=1)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    captured = compiled(**made.kwargs)
    eager = copy.deepcopy(model)
    expected = eager(**made.kwargs)
    assert_same(captured, expected, TOLERANCE)
    scalar_of(captured).backward()
    scalar_of(expected).backward()
    for (name, mine), theirs in zip(model.named_parameters(), eager.parameters()):
        if theirs.grad is not None:  # relative: summed outputs give gradients up to ~100
            scale = max(1.0, theirs.grad.abs().max().item())
            assert max_diff(mine.grad, theirs.grad) <= TOLERANCE * scale, name


@pytest.mark.parametrize("chunking", [True, False], ids=["chunk4", "global"])
def test_compile_fullgraph_decoding_steps(chunking: bool) -> None:
    model = causal_model(use_chunking=chunking, chunk_size=CHUNK if chunking else -1)
    tokens = torch.randint(3, SETTINGS["vocab_size"], (2, 8))
    with torch.no_grad():
        full = model(tokens).logits
    torch._dynamo.reset()
    # dynamo's "eager" backend: each position is a new graph (the keys grow), and capture alone is
    # what fullgraph tests; aot_eager would add seconds per position
    step = torch.compile(DecodingStep(model), backend="eager", fullgraph=True)
    cache = prefix_cache(model, tokens, 3)
    with torch.no_grad():
        for position in range(3, 6):  # across a chunk boundary (4)
            logits, cache = step(tokens[:, position : position + 1], cache)
            assert max_diff(logits[:, 0], full[:, position]) <= STEP_TOLERANCE, position
