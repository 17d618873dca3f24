"""Parity with the oracle: transformers 4.57.6's deprecated MEGA, on a grid covering every option.

For each configuration of :func:`mega_hf_helpers.parity_grid` the reference head is built with
seeded random weights (plus random qk biases, norm parameters and batch-norm statistics), its
state dict is loaded into ours with ``strict=True``, and both run on a right-padded batch.
Per-token outputs are compared at real positions only: padded positions are don't-care (the
implementations legitimately differ there). Tolerance: max abs diff <= 1e-5.

The oracle always runs with ``use_cache=False``: its cached path (``use_cache=True``, the
default for decoders) ignores ``truncation`` -- see ``test_reference_cached_path_ignores_truncation``.
Ours runs with its defaults (a decoder fills its cache), which must not change the outputs.

Where the reference is wrong (rmsnorm), ours is checked against the formula, and the reference
patched with the formula must then agree with ours exactly.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("transformers.models.deprecated.mega", reason="needs transformers 4.57 (the deprecated MEGA)")

import mega_plugin  # noqa: E402,F401  (registers the Auto classes)
from mega_hf_helpers import (  # noqa: E402
    ATTENTIONS,
    BIASES,
    CHUNKINGS,
    HEADS,
    HEADS_BY_ID,
    MODES,
    NO_DROPOUT,
    SECONDARY,
    TOLERANCE,
    Batch,
    Case,
    Head,
    assert_close,
    build_reference,
    compare_attentions,
    compare_head_outputs,
    compare_hidden_states,
    describe_grid,
    make_batch,
    max_diff,
    ours_from_reference,
    parity_grid,
    reference_modules,
    weighted_scalar,
)

pytestmark = [pytest.mark.reference, pytest.mark.filterwarnings("ignore:dropout2d:UserWarning")]

GRID = parity_grid()
CASES = {case.id: case for case in GRID}


def reference_kwargs(case_kwargs: dict[str, Any]) -> dict[str, Any]:
    # The oracle's cached path ignores truncation (a reference defect); run it uncached.
    return dict(case_kwargs, use_cache=False)


@functools.lru_cache(maxsize=None)
def eval_pair(case_id: str, head_id: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(reference, ours) in eval mode with the same weights. Shared: tests must not modify them."""
    case, head = CASES[case_id], HEADS_BY_ID[head_id]
    reference = build_reference(head, reference_kwargs(case.config_kwargs()))
    ours = ours_from_reference(head, reference, case.config_kwargs())
    return reference, ours


def flat_valid(head: Head, batch: Batch) -> torch.Tensor:
    return batch.flat_valid() if head.id == "MultipleChoice" else batch.valid


def test_grid_covers_every_option() -> None:
    counts = describe_grid(GRID)
    # Every value of every option occurs, and more than once (with different partners).
    expected = {
        "attention": ATTENTIONS,
        "bias": BIASES,
        "chunking": CHUNKINGS,
        "mode": MODES,
        **SECONDARY,
    }
    for name, values in expected.items():
        for value in values:
            assert counts[name].get(value, 0) >= 2, (name, value, counts[name])
    # Every pair of values of the four structural options occurs together.
    rows = {(c.attention, c.bias, c.chunking, c.mode) for c in GRID}
    factors = (ATTENTIONS, BIASES, CHUNKINGS, MODES)
    for (i, first), (j, second) in itertools.combinations(enumerate(factors), 2):
        for a, b in itertools.product(first, second):
            assert any(row[i] == a and row[j] == b for row in rows), (a, b)
    assert len(CASES) == len(GRID), "case ids must be unique"


# --------------------------------------------------------------------------------------
# Eval mode: every head, padded batch, hidden states and attentions, tuples
# --------------------------------------------------------------------------------------

EVAL_PARAMS = [pytest.param(case.id, head.id, id=f"{case.id}-{head.id}") for case in GRID for head in HEADS]


@pytest.mark.parametrize(("case_id", "head_id"), EVAL_PARAMS)
def test_eval_parity(case_id: str, head_id: str) -> None:
    case, head = CASES[case_id], HEADS_BY_ID[head_id]
    reference, ours = eval_pair(case_id, head_id)
    kwargs = case.config_kwargs()
    batch = make_batch(head, kwargs, length=case.length)
    with torch.no_grad():
        expected = reference(**batch.kwargs, output_hidden_states=True, output_attentions=True)
        actual = ours(**batch.kwargs, output_hidden_states=True, output_attentions=True)
    compare_head_outputs(head, actual, expected, batch)
    valid = flat_valid(head, batch)
    layers = kwargs["num_hidden_layers"]
    assert compare_hidden_states(actual.hidden_states, expected.hidden_states, valid) == layers + 1
    assert compare_attentions(actual.attentions, expected.attentions, valid) == layers
    chunks = case.length // 8 if case.chunked else 1
    query_length = 8 if case.chunked else case.length
    assert actual.attentions[0].shape == (valid.shape[0], chunks, query_length, query_length)
    if head.id == "QuestionAnswering":
        # Its loss normalises over every position, padding included: compare it without padding.
        full = make_batch(head, kwargs, length=case.length, padded=False)
        with torch.no_grad():
            assert_close(ours(**full.kwargs).loss, reference(**full.kwargs).loss, "QuestionAnswering.loss")


@pytest.mark.parametrize(("case_id", "head_id"), EVAL_PARAMS)
def test_tuple_outputs(case_id: str, head_id: str) -> None:
    """return_dict=False: our tuple has no None, and equals the reference's tuple without its Nones."""
    case, head = CASES[case_id], HEADS_BY_ID[head_id]
    reference, ours = eval_pair(case_id, head_id)
    batch = make_batch(head, case.config_kwargs(), length=case.length)
    call = batch.without("start_positions", "end_positions")  # the QA loss depends on padding
    if head.id in ("Model", "CausalLM"):
        call["use_cache"] = False  # the cache is compared by the generation tests, not here
    flags = {"output_hidden_states": True, "output_attentions": True}
    with torch.no_grad():
        named = ours(**call, **flags, return_dict=True)
        actual = ours(**call, **flags, return_dict=False)
        expected = reference(**call, **flags, return_dict=False)
        bare = ours(**call, return_dict=False)
    assert isinstance(actual, tuple) and all(item is not None for item in actual)
    assert all(item is not None for item in bare)
    expected = tuple(item for item in expected if item is not None)
    names = list(named.keys())
    assert len(actual) == len(expected) == len(names), (names, len(actual), len(expected))
    valid = flat_valid(head, batch)
    for name, mine, theirs in zip(names, actual, expected):
        if name == "hidden_states":
            compare_hidden_states(mine, theirs, valid)
        elif name == "attentions":
            compare_attentions(mine, theirs, valid)
        elif name in head.per_token:
            assert_close(mine[valid], theirs[valid], f"tuple {name}")
        else:
            assert_close(mine, theirs, f"tuple {name}")
    # Without output flags the tuple is just the head's outputs.
    assert len(bare) == len([n for n in names if n not in ("hidden_states", "attentions")])


# --------------------------------------------------------------------------------------
# Train mode (all dropouts 0): outputs, gradients of every parameter, batch-norm statistics
# --------------------------------------------------------------------------------------

_OTHER_HEADS = [head.id for head in HEADS if head.id not in ("CausalLM", "MaskedLM")]
TRAIN_PARAMS = []
for _index, _case in enumerate(GRID):
    _lm = "CausalLM" if _case.causal else "MaskedLM"
    for _head_id in (_lm, _OTHER_HEADS[_index % len(_OTHER_HEADS)]):
        TRAIN_PARAMS.append(pytest.param(_case.id, _head_id, id=f"{_case.id}-{_head_id}"))


@pytest.mark.parametrize(("case_id", "head_id"), TRAIN_PARAMS)
def test_train_parity_with_gradients(case_id: str, head_id: str) -> None:
    case, head = CASES[case_id], HEADS_BY_ID[head_id]
    kwargs = case.config_kwargs(**NO_DROPOUT)
    reference = build_reference(head, reference_kwargs(kwargs)).train()
    ours = ours_from_reference(head, reference, kwargs).train()
    assert ours.training and all(module.training for module in ours.modules())
    # Batch norm in train mode normalises with statistics over every (batch, position), padding
    # included, in both implementations. Padded positions are don't-care and do differ (e.g. the
    # causal laplace/relu2 normaliser at padded rows), which would then leak into the statistics
    # and so into real positions; batch-norm configurations therefore run on an unpadded batch.
    padded = kwargs["normalization_type"] != "batchnorm"
    batch = make_batch(head, kwargs, length=case.length, padded=padded, seed=3)
    if head.id == "QuestionAnswering" and padded:
        # The QA loss normalises over padded positions too; the gradients come from the logits.
        batch.kwargs = batch.without("start_positions", "end_positions")
    expected = reference(**batch.kwargs)
    actual = ours(**batch.kwargs)
    compare_head_outputs(head, actual, expected, batch)

    valid = flat_valid(head, batch)
    names = [n for n in head.per_token + head.per_sequence if getattr(actual, n, None) is not None]
    masks = [valid if n in head.per_token else None for n in names]
    weighted_scalar([getattr(actual, n) for n in names], masks).backward()
    weighted_scalar([getattr(expected, n) for n in names], masks).backward()

    reference_parameters = dict(reference.named_parameters())
    ours_parameters = dict(ours.named_parameters())
    assert sorted(ours_parameters) == sorted(reference_parameters)
    with_grad = 0
    for name, parameter in ours_parameters.items():
        theirs = reference_parameters[name].grad
        if theirs is None or parameter.grad is None:
            assert theirs is None and parameter.grad is None, f"{name}: gradient missing on one side"
            continue
        assert_close(parameter.grad, theirs, f"grad {name}")
        with_grad += 1
    assert with_grad > 10
    reference_buffers = dict(reference.named_buffers())
    for name, buffer in ours.named_buffers():
        if name in reference_buffers:
            assert_close(buffer.double(), reference_buffers[name].double(), f"buffer {name} after a train step")


# --------------------------------------------------------------------------------------
# Options the grid does not cross: syncbatchnorm, implicit token types, inputs_embeds
# --------------------------------------------------------------------------------------


def _pair(case: Case, head_id: str, **overrides: Any) -> tuple[Head, dict, torch.nn.Module, torch.nn.Module]:
    head = HEADS_BY_ID[head_id]
    kwargs = case.config_kwargs(**overrides)
    reference = build_reference(head, reference_kwargs(kwargs))
    return head, kwargs, reference, ours_from_reference(head, reference, kwargs)


@pytest.mark.parametrize("case_id", [GRID[0].id, GRID[4].id], ids=lambda x: x)
def test_syncbatchnorm_eval_parity(case_id: str) -> None:
    # SyncBatchNorm needs a process group only in train mode; in eval it is batch norm with
    # running statistics, and its parameters and buffers load like batch norm's.
    head, kwargs, reference, ours = _pair(CASES[case_id], "Model", normalization_type="syncbatchnorm")
    batch = make_batch(head, kwargs, length=CASES[case_id].length)
    with torch.no_grad():
        compare_head_outputs(head, ours(**batch.kwargs), reference(**batch.kwargs), batch)


@pytest.mark.parametrize("case_id", [c.id for c in GRID if c.options["add_token_type_embeddings"]][:2], ids=lambda x: x)
def test_token_types_default_to_zero(case_id: str) -> None:
    head, kwargs, reference, ours = _pair(CASES[case_id], "Model")
    batch = make_batch(head, kwargs, length=CASES[case_id].length)
    call = batch.without("token_type_ids")
    with torch.no_grad():
        compare_head_outputs(head, ours(**call), reference(**call), batch)


@pytest.mark.parametrize("case_id", [GRID[1].id, GRID[2].id, GRID[5].id], ids=lambda x: x)
def test_inputs_embeds_parity(case_id: str) -> None:
    head, kwargs, reference, ours = _pair(CASES[case_id], "Model")
    batch = make_batch(head, kwargs, length=CASES[case_id].length)
    embeds = torch.randn(*batch.valid.shape, kwargs["hidden_size"], generator=torch.Generator().manual_seed(5))
    call = batch.without("input_ids")
    with torch.no_grad():
        compare_head_outputs(head, ours(inputs_embeds=embeds, **call), reference(inputs_embeds=embeds, **call), batch)


# --------------------------------------------------------------------------------------
# rmsnorm: the reference does not normalise; ours is the formula, and nothing else differs
# --------------------------------------------------------------------------------------


def test_rmsnorm_module_is_the_formula() -> None:
    from mega_plugin.core.norms import SequenceNorm

    generator = torch.Generator().manual_seed(0)
    for affine in (True, False):
        norm = SequenceNorm("rmsnorm", 16, eps=1e-5, affine=affine)
        weight = torch.randn(16, generator=generator) if affine else torch.ones(16)
        if affine:
            with torch.no_grad():
                norm.norm.weight.copy_(weight)
        x = torch.randn(3, 7, 16, generator=generator) * 3.0
        expected = weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
        assert_close(norm(x), expected, f"rmsnorm affine={affine}", tolerance=1e-6)


def _correct_rmsnorm_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    mean_square = torch.mean(torch.square(x), dim=-1, keepdim=True)
    if self.weight is not None:
        x = x * self.weight
    return x * torch.rsqrt(mean_square + self.eps)


RMS_CASES = [GRID[0].id, GRID[3].id, GRID[7].id, GRID[10].id]


@pytest.mark.parametrize("case_id", RMS_CASES, ids=lambda x: x)
@pytest.mark.parametrize("head_id", ["Model", "MaskedLM"])
def test_rmsnorm_model_differs_from_reference_only_by_the_norm(
    case_id: str, head_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    head, kwargs, reference, ours = _pair(CASES[case_id], head_id, normalization_type="rmsnorm")
    batch = make_batch(head, kwargs, length=CASES[case_id].length)
    with torch.no_grad():
        actual = ours(**batch.kwargs)
        unpatched = reference(**batch.kwargs)
        modeling, _ = reference_modules()
        monkeypatch.setattr(modeling.MegaRMSNorm, "forward", _correct_rmsnorm_forward)
        # The reference's eps for rmsnorm is the 1e-5 its sequence-norm wrapper passes, like ours.
        assert all(m.eps == 1e-5 for m in reference.modules() if isinstance(m, modeling.MegaRMSNorm))
        patched = reference(**batch.kwargs)
    field = head.per_token[0]
    valid = batch.valid
    assert max_diff(getattr(actual, field)[valid], getattr(unpatched, field)[valid]) > 1e-3, (
        "the unpatched reference should differ (it does not normalise)"
    )
    compare_head_outputs(head, actual, patched, batch)


# --------------------------------------------------------------------------------------
# Why the oracle runs uncached
# --------------------------------------------------------------------------------------


def test_reference_cached_path_ignores_truncation() -> None:
    case = next(c for c in GRID if c.causal and c.options["truncation"] is not None)
    head = HEADS_BY_ID["Model"]
    kwargs = case.config_kwargs()
    reference = build_reference(head, kwargs)  # use_cache=True: the reference default for decoders
    ours = ours_from_reference(head, reference, kwargs)
    batch = make_batch(head, kwargs, length=case.length)
    valid = batch.valid
    with torch.no_grad():
        cached = reference(**batch.kwargs, use_cache=True).last_hidden_state
        uncached = reference(**batch.kwargs, use_cache=False).last_hidden_state
        mine_cached = ours(**batch.kwargs, use_cache=True).last_hidden_state
        mine_uncached = ours(**batch.kwargs, use_cache=False).last_hidden_state
    # The reference's use_cache=True path runs an untruncated EMA: a defect of the oracle.
    assert max_diff(cached[valid], uncached[valid]) > 1e-3
    assert_close(mine_uncached[valid], uncached[valid], "ours vs reference, uncached")
    assert_close(mine_cached[valid], uncached[valid], "ours cached vs the truncated reference")
    assert TOLERANCE == 1e-5
