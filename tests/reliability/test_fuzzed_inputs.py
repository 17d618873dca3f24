"""Property-based tests (hypothesis) of the HF ``MegaModel`` over random valid configs and inputs.

Properties, for every option of the config and for batch sizes, lengths (1, and lengths that are
not multiples of the chunk), padding patterns (none, left, right, all-but-one masked, fully
masked rows) and token types:

- the output shapes are right and every value is finite;
- for a causal-EMA model (``bidirectional=False``) the content of padded positions does not
  change the outputs at real positions (the padded ids are replaced by random other ids);
- invalid inputs raise ``ValueError`` / ``TypeError`` naming the argument, never an IndexError
  or a shape error from deep inside.

The ``reliability`` hypothesis profile (conftest-free: registered here) is derandomized, so CI
runs the same examples every time.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytestmark = pytest.mark.hf
pytest.importorskip("transformers")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from _support.configs import NO_DROPOUT, TINY  # noqa: E402

from mega_plugin.adapters.hf import MegaConfig, MegaModel  # noqa: E402

settings.register_profile(
    "reliability",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings(settings.get_profile("reliability"), max_examples=40)
FUZZ_ERRORS = settings(settings.get_profile("reliability"), max_examples=25)

MODES = {
    "causal": {"is_decoder": True, "bidirectional": False},
    "unidir": {"is_decoder": False, "bidirectional": False},
    "bidir": {"is_decoder": False, "bidirectional": True},
}
PADDINGS = ("none", "left", "right", "all_but_one", "fully_masked_row", "random")


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    """A random valid config touching every option (sizes stay tiny)."""
    use_chunking = draw(st.booleans())
    truncation = draw(st.none() | st.integers(1, 12))
    values: dict[str, Any] = {
        **TINY,
        **NO_DROPOUT,
        **MODES[draw(st.sampled_from(sorted(MODES)))],
        "num_hidden_layers": draw(st.integers(1, 2)),
        "attention_activation": draw(st.sampled_from(["softmax", "laplace", "relu2"])),
        "relative_positional_bias": draw(st.sampled_from(["rotary", "simple"])),
        "normalization_type": draw(st.sampled_from(["scalenorm", "layernorm", "rmsnorm", "batchnorm", "syncbatchnorm"])),
        "activation": draw(st.sampled_from(["silu", "relu", "linear", "gelu", "gelu_accurate"])),
        "norm_affine": draw(st.booleans()),
        "normalize_before_mega": draw(st.booleans()),
        "normalize_before_ffn": draw(st.booleans()),
        "use_normalized_ffn": draw(st.booleans()),
        "use_feature_dropout": draw(st.booleans()),
        "use_chunking": use_chunking,
        "chunk_size": draw(st.integers(1, 6)) if use_chunking else -1,
        "truncation": truncation,
        "add_token_type_embeddings": draw(st.booleans()),
        # A named kernel that cannot serve a call raises by design; the scan cannot truncate.
        "ema_kernel": draw(st.sampled_from(["auto", "reference"] + (["chunked_scan"] if truncation is None else []))),
        "attention_kernel": draw(st.sampled_from(["auto", "reference"])),
        "ema_projection_size": draw(st.integers(1, 4)),
        "shared_representation_size": draw(st.sampled_from([4, 8])),
    }
    return values


def padding_mask(pattern: str, batch: int, length: int, draw: st.DrawFn) -> torch.Tensor | None:
    """(B, L) 0/1 mask for ``pattern``; row 0 always keeps at least one real token."""
    if pattern == "none":
        return None
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        real = draw(st.integers(1, length))
        if pattern == "left":
            mask[row, : length - real] = 0
        elif pattern == "right":
            mask[row, real:] = 0
        elif pattern == "all_but_one":
            mask[row] = 0
            mask[row, draw(st.integers(0, length - 1))] = 1
        elif pattern == "fully_masked_row":
            if row > 0:
                mask[row] = 0
        else:
            bits = draw(st.lists(st.booleans(), min_size=length, max_size=length))
            mask[row] = torch.tensor(bits, dtype=torch.long)
    return mask


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, torch.Tensor | None], str]:
    values = draw(configs())
    batch = draw(st.integers(1, 3))
    length = draw(st.integers(1, 13))
    pattern = draw(st.sampled_from(PADDINGS))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, values["vocab_size"], (batch, length), generator=generator)
    token_types = None
    if values["add_token_type_embeddings"] and draw(st.booleans()):
        token_types = torch.randint(0, 2, (batch, length), generator=generator)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": padding_mask(pattern, batch, length, draw),
        "token_type_ids": token_types,
    }
    return values, inputs, pattern


def _model(values: dict[str, Any], seed: int = 0) -> MegaModel:
    torch.manual_seed(seed)
    return MegaModel(MegaConfig(**values)).eval()


@FUZZ
@given(case=cases())
def test_shapes_are_right_and_outputs_finite(case: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    values, inputs, _ = case
    model = _model(values)
    batch, length = inputs["input_ids"].shape
    with torch.no_grad():
        output = model(**inputs, use_cache=False, output_hidden_states=True)
    assert output.last_hidden_state.shape == (batch, length, values["hidden_size"])
    assert output.pooler_output.shape == (batch, values["hidden_size"])
    assert len(output.hidden_states) == values["num_hidden_layers"] + 1
    for tensor in (*output.hidden_states, output.pooler_output):
        assert torch.isfinite(tensor).all(), "non-finite output"


@FUZZ
@given(case=cases(), replacement_seed=st.integers(0, 2**16))
def test_padded_content_does_not_leak_into_real_positions(
    case: tuple[dict[str, Any], dict[str, Any], str], replacement_seed: int
) -> None:
    values, inputs, pattern = case
    mask = inputs["attention_mask"]
    if mask is None or values["bidirectional"]:
        return  # the property is stated for causal-EMA models with padding
    model = _model(values)
    changed = dict(inputs)
    generator = torch.Generator().manual_seed(replacement_seed)
    noise = torch.randint(0, values["vocab_size"], inputs["input_ids"].shape, generator=generator)
    changed["input_ids"] = torch.where(mask.bool(), inputs["input_ids"], noise)
    with torch.no_grad():
        original = model(**inputs, use_cache=False).last_hidden_state
        perturbed = model(**changed, use_cache=False).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(perturbed[real], original[real], rtol=1e-5, atol=1e-5)


def _bad_inputs(values: dict[str, Any], batch: int, length: int) -> list[tuple[str, dict[str, Any], str]]:
    """(name, keyword arguments, argument the error must name) for inputs the model must refuse."""
    vocab = values["vocab_size"]
    ids = torch.randint(0, vocab, (batch, length))
    types_allowed = values["add_token_type_embeddings"]
    cases = [
        ("id >= vocab", {"input_ids": ids.clone().fill_(vocab)}, "input_ids"),
        ("negative id", {"input_ids": ids.clone().fill_(-1)}, "input_ids"),
        ("float ids", {"input_ids": ids.float()}, "input_ids"),
        ("1-d ids", {"input_ids": ids[0]}, "input_ids"),
        ("3-d ids", {"input_ids": ids.unsqueeze(-1)}, "input_ids"),
        ("mask too long", {"input_ids": ids, "attention_mask": torch.ones(batch, length + 1)}, "attention_mask"),
        ("mask wrong batch", {"input_ids": ids, "attention_mask": torch.ones(batch + 1, length)}, "attention_mask"),
        ("mask 3-d", {"input_ids": ids, "attention_mask": torch.ones(batch, 1, length)}, "attention_mask"),
        ("types wrong shape", {"input_ids": ids, "token_type_ids": torch.zeros(batch, length + 1, dtype=torch.long)}, "token_type_ids"),
        ("embeds wrong width", {"inputs_embeds": torch.randn(batch, length, values["hidden_size"] + 1)}, "inputs_embeds"),
        ("embeds 2-d", {"inputs_embeds": torch.randn(length, values["hidden_size"])}, "inputs_embeds"),
        ("ids and embeds", {"input_ids": ids, "inputs_embeds": torch.randn(batch, length, values["hidden_size"])}, "inputs_embeds"),
        ("unknown keyword", {"input_ids": ids, "attention_masks": torch.ones(batch, length)}, "attention_masks"),
    ]
    if types_allowed:
        cases.append(("type id too large", {"input_ids": ids, "token_type_ids": torch.full((batch, length), 2)}, "token_type_ids"))
    else:
        cases.append(("types without embeddings", {"input_ids": ids, "token_type_ids": torch.ones(batch, length, dtype=torch.long)}, "token_type_ids"))
    return cases


@FUZZ_ERRORS
@given(values=configs(), batch=st.integers(1, 3), length=st.integers(1, 9), pick=st.integers(0, 100))
def test_invalid_inputs_raise_clear_errors(values: dict[str, Any], batch: int, length: int, pick: int) -> None:
    model = _model(values)
    bad = _bad_inputs(values, batch, length)
    # Every example checks three cases; across examples every case is covered.
    for index in (pick % len(bad), (pick + 5) % len(bad), (pick + 9) % len(bad)):
        name, kwargs, argument = bad[index]
        with pytest.raises((ValueError, TypeError)) as caught:
            model(**kwargs, use_cache=False)
        assert type(caught.value) in (ValueError, TypeError), f"{name}: {type(caught.value).__name__}"
        assert argument in str(caught.value), f"{name}: {caught.value}"


@pytest.mark.parametrize("case_index", range(14))
def test_every_invalid_input_case_is_refused(case_index: int) -> None:
    """The same cases without hypothesis, so each is run for sure (both token-type settings)."""
    for add_types in (False, True):
        values = {**TINY, **NO_DROPOUT, "add_token_type_embeddings": add_types}
        bad = _bad_inputs(values, 2, 5)
        name, kwargs, argument = bad[case_index]
        with pytest.raises((ValueError, TypeError)) as caught:
            _model(values)(**kwargs, use_cache=False)
        assert type(caught.value) in (ValueError, TypeError), name
        assert argument in str(caught.value), f"{name}: {caught.value}"
