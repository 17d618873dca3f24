"""``StaticDecoder`` against the core's whole-sequence forward, over the option space of a causal model.

The oracle is the core's reference modules (``reference_copy``: every backend undone) run over
the whole sequence at once, whose outputs the HF and fairseq2 parity tests check against
transformers 4.57's MEGA: the logits after every generated position must equal the whole
forward's logits at that position. Prompts are shorter than a chunk and the decoding crosses
several chunk boundaries.
"""

from __future__ import annotations

import itertools
from typing import Any, Final

import pytest
import torch
from torch import Tensor, nn

from _support.backends import accelerated, reference_copy
from _support.configs import CAUSAL, tiny_config
from mega_plugin.backends.static_decoding import StaticDecoder
from mega_plugin.backends.token_step import weights as weights_module
from mega_plugin.backends.token_step.weights import SPLIT_ROWS_MAX, Projection
from mega_plugin.core import MegaBackbone

TOLERANCE: Final = dict(atol=2e-5, rtol=2e-5)
LENGTH: Final = 13
PROMPT: Final = 3
CHUNK: Final = 4

# Every (attention, bias, chunking); the secondary options rotate over them.
PRIMARY: Final = list(itertools.product(("softmax", "laplace", "relu2"), ("rotary", "simple"), ("chunk", "whole")))
SECONDARY: Final[list[dict[str, Any]]] = [
    dict(normalization_type="scalenorm"),
    dict(normalization_type="layernorm", normalize_before_mega=False, normalize_before_ffn=False),
    dict(normalization_type="rmsnorm", activation="gelu"),
    dict(normalization_type="batchnorm", activation="relu"),
    dict(use_normalized_ffn=False, ema_projection_size=1),
    dict(add_final_norm=True, scale_embeddings=True, activation="linear"),
]
CASES: Final = {
    f"{attention}-{bias}-{chunking}-{index % len(SECONDARY)}": dict(
        attention_activation=attention,
        relative_positional_bias=bias,
        **(dict(use_chunking=True, chunk_size=CHUNK) if chunking == "chunk" else {}),
        **SECONDARY[index % len(SECONDARY)],
    )
    for index, (attention, bias, chunking) in enumerate(PRIMARY)
}


def build(**overrides: Any) -> tuple[MegaBackbone, nn.Linear]:
    """A causal backbone with perturbed norms and batch-norm statistics, and a linear head."""
    torch.manual_seed(0)
    model = MegaBackbone(tiny_config(**CAUSAL, **overrides)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
        for name, parameter in model.named_parameters():
            if ".norm." in name or name.endswith("qk_bias"):
                parameter.add_(0.2 * torch.randn_like(parameter))
    head = nn.Linear(model.config.hidden_size, model.config.vocab_size)
    return model, head


def whole_logits(model: MegaBackbone, head: nn.Module, tokens: Tensor, mask: Tensor | None) -> Tensor:
    """The oracle: the core's reference modules over the whole sequence, (B, L, vocabulary)."""
    with torch.no_grad():
        return head(reference_copy(model)(tokens, attention_mask=mask).hidden)


def decoded_logits(decoder: StaticDecoder, tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Logits after positions PROMPT - 1 .. L - 2 (B, L - PROMPT, vocabulary), fed the given tokens."""
    logits = [decoder.prefill(tokens[:, :PROMPT], attention_mask=None if mask is None else mask[:, :PROMPT])]
    for position in range(PROMPT, tokens.shape[1] - 1):
        logits.append(decoder.step(tokens[:, position]))
    return torch.stack(logits, dim=1)


def sample(batch: int, *, padding: bool) -> tuple[Tensor, Tensor | None]:
    tokens = torch.randint(3, 50, (batch, LENGTH), generator=torch.Generator().manual_seed(1))
    if not padding:
        return tokens, None
    mask = torch.ones(batch, LENGTH, dtype=torch.long)
    mask[1, :2] = 0  # left padding inside the prompt
    mask[-1, :1] = 0
    return tokens, mask


def decoder_for(model: MegaBackbone, head: nn.Module, **options: Any) -> StaticDecoder:
    return StaticDecoder(
        model.embedding_layer, model.layers, head=head, final_norm=model.final_norm, max_length=LENGTH, **options
    )


@pytest.mark.parametrize("padding", [False, True], ids=["no-padding", "left-padding"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_logits_match_the_whole_forward(case: str, padding: bool) -> None:
    model, head = build(**CASES[case])
    tokens, mask = sample(3, padding=padding)
    expected = whole_logits(model, head, tokens, mask)[:, PROMPT - 1 : -1]
    got = decoded_logits(decoder_for(model, head), tokens, mask)
    torch.testing.assert_close(got, expected, **TOLERANCE)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, SPLIT_ROWS_MAX, SPLIT_ROWS_MAX + 1])
def test_batches_and_threads(batch: int, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Few rows run the projections as two halves on two threads; more rows, or one thread, as one product."""
    monkeypatch.setattr(weights_module, "SPLIT_MIN_WEIGHTS", 0)  # the tiny projections split too
    configured = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, head = build(use_chunking=True, chunk_size=CHUNK)
        tokens, mask = sample(batch, padding=False)
        expected = whole_logits(model, head, tokens, mask)[:, PROMPT - 1 : -1]
        torch.testing.assert_close(decoded_logits(decoder_for(model, head), tokens, mask), expected, **TOLERANCE)
    finally:
        torch.set_num_threads(configured)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(1, 16, 50), (3, 16, 50), (8, 16, 50), (2, 16, 7), (2, 16, 8)])
def test_projection_equals_linear(shape: tuple[int, int, int], threads: int) -> None:
    rows, features, outputs = shape
    configured = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for bias in (True, False):
            linear = nn.Linear(features, outputs, bias=bias)
            projection = Projection.of(linear, split_from=0)
            assert (projection.halves is not None) == (threads > 1 and outputs % 2 == 0)
            assert Projection.of(linear).halves is None  # too small to gain from a second core
            x = torch.randn(rows, features)
            torch.testing.assert_close(projection(x), linear(x), atol=1e-6, rtol=1e-6)
    finally:
        torch.set_num_threads(configured)


def test_prefill_through_the_cpu_fast_backend() -> None:
    """The prompt runs through the model's own forward, whatever backend it has."""
    model, head = build(use_chunking=True, chunk_size=CHUNK)
    tokens, mask = sample(2, padding=True)
    expected = whole_logits(model, head, tokens, mask)[:, PROMPT - 1 : -1]
    fast = accelerated(reference_copy(model))
    torch.testing.assert_close(decoded_logits(decoder_for(fast, head), tokens, mask), expected, **TOLERANCE)


def test_any_head_callable() -> None:
    model, head = build(use_chunking=True, chunk_size=CHUNK)
    tokens, _ = sample(2, padding=False)
    log_softmax_head = lambda hidden: torch.log_softmax(head(hidden), dim=-1)  # noqa: E731
    expected = whole_logits(model, log_softmax_head, tokens, None)[:, PROMPT - 1 : -1]
    torch.testing.assert_close(
        decoded_logits(decoder_for(model, log_softmax_head), tokens, None), expected, **TOLERANCE
    )


def test_greedy_tokens_and_a_second_prompt() -> None:
    """Greedy tokens are the argmax of the whole forward's logits; a new prompt starts a new state."""
    model, head = build(use_chunking=True, chunk_size=CHUNK)
    decoder = decoder_for(model, head)
    for seed in (1, 2):
        prompt = torch.randint(3, 50, (2, PROMPT), generator=torch.Generator().manual_seed(seed))
        out = decoder.greedy(prompt, max_new_tokens=LENGTH - PROMPT)
        assert out.shape == (2, LENGTH)
        assert torch.equal(out[:, :PROMPT], prompt)
        expected_next = whole_logits(model, head, out, None)[:, PROMPT - 1 : -1].argmax(dim=-1)
        assert torch.equal(out[:, PROMPT:], expected_next)


def test_state_stays_one_chunk() -> None:
    model, head = build(use_chunking=True, chunk_size=CHUNK)
    decoder = StaticDecoder(model.embedding_layer, model.layers, head=head)  # chunked: no max_length needed
    decoder.prefill(torch.randint(3, 50, (1, PROMPT)))
    size = decoder.state_bytes()
    config = model.config
    per_layer = 4 * (
        config.hidden_size * config.ema_projection_size
        + CHUNK * (config.shared_representation_size + config.intermediate_size)
    )
    assert size == per_layer * config.num_hidden_layers
    token = torch.tensor([5])
    for _ in range(5 * CHUNK):
        decoder.step(token)
    assert decoder.state_bytes() == size
    assert decoder.position == PROMPT + 5 * CHUNK


def test_refresh_reads_changed_weights() -> None:
    model, head = build(use_chunking=True, chunk_size=CHUNK)
    decoder = decoder_for(model, head)
    with torch.no_grad():
        for block in model.layers:
            block.mega_layer.ema_gate.damping_factor.add_(0.5)  # only the derived EMA coefficients see it
    tokens, _ = sample(2, padding=False)
    expected = whole_logits(model, head, tokens, None)[:, PROMPT - 1 : -1]
    stale = decoded_logits(decoder, tokens, None)
    assert not torch.allclose(stale, expected, **TOLERANCE)
    decoder.refresh()
    torch.testing.assert_close(decoded_logits(decoder, tokens, None), expected, **TOLERANCE)


def test_compiled_step_matches_the_whole_forward() -> None:
    """One compiled graph serves every position (the slot is a tensor): no recompilation per step."""
    torch._dynamo.reset()
    model, head = build(use_chunking=True, chunk_size=CHUNK, attention_activation="softmax")
    tokens, mask = sample(2, padding=True)
    expected = whole_logits(model, head, tokens, mask)[:, PROMPT - 1 : -1]
    decoder = decoder_for(model, head, compile=True)
    torch.testing.assert_close(decoded_logits(decoder, tokens, mask), expected, **TOLERANCE)
    # every position and a second prompt run the first graph (the buffers are filled in place)
    tokens = torch.flip(tokens, dims=(1,))
    expected = whole_logits(model, head, tokens, mask)[:, PROMPT - 1 : -1]
    with torch._dynamo.config.patch(error_on_recompile=True):
        got = decoded_logits(decoder, tokens, mask)
    torch.testing.assert_close(got, expected, **TOLERANCE)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(is_decoder=False, bidirectional=True), "causal model"),
        (dict(truncation=12), "truncation=12: .* max_length <= 12 \\(got max_length=13\\)"),
        (dict(add_cross_attention=True), "add_cross_attention=True"),
        (dict(max_positions=64, use_chunking=False, max_length_override=4096), "frames up to 2048"),
    ],
    ids=["bidirectional", "truncation", "cross-attention", "frame-too-long"],
)
def test_unsupported_models_are_refused(overrides: dict[str, Any], message: str) -> None:
    max_length = overrides.pop("max_length_override", LENGTH)
    config = {**CAUSAL, **overrides}
    torch.manual_seed(0)
    model = MegaBackbone(tiny_config(**config)).eval()
    with pytest.raises(ValueError, match=message):
        StaticDecoder(model.embedding_layer, model.layers, head=nn.Linear(16, 50), max_length=max_length)


@pytest.mark.parametrize("chunking", [dict(use_chunking=True, chunk_size=CHUNK), dict()], ids=["chunk", "whole"])
def test_a_truncated_ema_within_its_window(chunking: dict[str, Any]) -> None:
    """The original LMs truncate their EMA (8192): within the window it is the full EMA, which the
    step continues from the state the prompt's inputs give."""
    model, head = build(truncation=LENGTH, **chunking)
    tokens, mask = sample(3, padding=True)
    expected = whole_logits(model, head, tokens, mask)[:, PROMPT - 1 : -1]
    torch.testing.assert_close(decoded_logits(decoder_for(model, head), tokens, mask), expected, **TOLERANCE)
    with pytest.raises(ValueError, match="max_length <= 13" if chunking else "max_length is needed"):
        StaticDecoder(model.embedding_layer, model.layers, head=head)  # no max_length: unbounded


def test_forward_hooks_on_projections_run() -> None:
    """A projection with a forward hook is called as a module (its weights are not the whole story)."""
    model, head = build(use_chunking=True, chunk_size=CHUNK)
    for block in model.layers:
        block.mega_layer.v_proj.register_forward_hook(lambda module, args, output: 2.0 * output)
    tokens, _ = sample(2, padding=False)
    expected = whole_logits(model, head, tokens, None)[:, PROMPT - 1 : -1]  # the copy keeps the hooks
    torch.testing.assert_close(decoded_logits(decoder_for(model, head), tokens, None), expected, **TOLERANCE)


def test_offloaded_weights_are_refused() -> None:
    model, head = build(use_chunking=True, chunk_size=CHUNK)
    model.layers[1].mega_layer.v_proj.to("meta")  # what accelerate's offloading leaves in the module
    with pytest.raises(ValueError, match="offloaded"):
        decoder_for(model, head)


def test_bad_calls_are_refused() -> None:
    model, head = build()
    with pytest.raises(ValueError, match="max_length is needed without chunking"):
        StaticDecoder(model.embedding_layer, model.layers, head=head)
    with pytest.raises(ValueError, match="max_length=0; allowed values"):
        StaticDecoder(model.embedding_layer, model.layers, head=head, max_length=0)
    decoder = decoder_for(model, head)
    with pytest.raises(RuntimeError, match="prefill"):
        decoder.step(torch.tensor([4]))
    with pytest.raises(ValueError, match="pad prompts on the left"):
        decoder.prefill(torch.tensor([[4, 5, 6]]), attention_mask=torch.tensor([[1, 1, 0]]))
    with pytest.raises(ValueError, match="exceed max_length=13"):
        decoder.greedy(torch.randint(3, 50, (1, 10)), max_new_tokens=5)
    with pytest.raises(ValueError, match="max_new_tokens=0; allowed values"):
        decoder.greedy(torch.randint(3, 50, (1, 3)), max_new_tokens=0)
    decoder.prefill(torch.randint(3, 50, (2, 3)))
    with pytest.raises(ValueError, match="3 rows; the prompt had 2"):
        decoder.step(torch.tensor([4, 5, 6]))
    model.train()
    with pytest.raises(ValueError, match=r"model.eval\(\)"):
        decoder.prefill(torch.randint(3, 50, (2, 3)))
