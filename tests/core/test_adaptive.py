"""Adaptive input, adaptive softmax and the final norm of the core, against float64 ground truth.

The ground truth is written here from the definitions (Baevski & Auli; Grave et al.; the
original fairseq modules' conventions), token by token and word by word in float64, from the
module's own weights: band ``b`` of id ``t`` is ``P_b E_b[t - start_b]``; log p(w) is the head
log-softmax entry for head words and ``log p(cluster) + log_softmax(tail)[w - start]`` for the
others, with tied tables read from the adaptive input. The original code's own outputs are the
oracle of tests/converters/test_original_lm.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mega_plugin.core.adaptive_input import AdaptiveInput
from mega_plugin.core.adaptive_softmax import AdaptiveSoftmax
from mega_plugin.core.backbone import MegaBackbone
from mega_plugin.core.config import MegaCoreConfig

from _support.configs import TINY

BASE = dict(TINY, bidirectional=False, is_decoder=True, dropout_prob=0.0, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, nffn_activation_dropout_prob=0.0)

OPTIONS = [
    pytest.param(dict(cutoffs=[5, 20], factor=2.0, tie=False, proj=False), id="untied-2-bands"),
    pytest.param(dict(cutoffs=[5, 20], factor=2.0, tie=True, proj=False), id="tied-weights"),
    pytest.param(dict(cutoffs=[5, 20], factor=2.0, tie=True, proj=True), id="tied-weights-and-projections"),
    pytest.param(dict(cutoffs=[10], factor=4.0, tie=True, proj=True), id="one-tail-factor-4"),
    pytest.param(dict(cutoffs=[7, 30, 50], factor=1.0, tie=False, proj=False), id="factor-1-last-cutoff-is-vocab"),
]


def config(cutoffs: list[int], factor: float, tie: bool, proj: bool, **changes: Any) -> MegaCoreConfig:
    return MegaCoreConfig(**{
        **BASE,
        "adaptive_input_cutoffs": cutoffs, "adaptive_input_factor": factor,
        "adaptive_softmax_cutoffs": cutoffs, "adaptive_softmax_factor": factor,
        "tie_adaptive_weights": tie, "tie_adaptive_proj": proj, **changes,
    })


def randomized(*modules: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for module in modules:
            for parameter in module.parameters():
                parameter.normal_(0.0, 0.5)


def expected_embedding(module: AdaptiveInput, ids: torch.Tensor) -> torch.Tensor:
    rows = []
    for token in ids.reshape(-1).tolist():
        band = next(b for b, end in enumerate(module.edges) if token < end)
        start = module.edges[band - 1] if band else 0
        table, projection = module.band_weights(band)
        rows.append(projection.double() @ table[token - start].double())
    return torch.stack(rows).reshape(*ids.shape, -1)


def expected_log_probs(softmax: AdaptiveSoftmax, source: AdaptiveInput, x: torch.Tensor, core: MegaCoreConfig) -> torch.Tensor:
    x = x.double().reshape(-1, x.shape[-1])
    edges = softmax.edges
    words = source.band_weights(0)[0] if core.tie_adaptive_weights else softmax.head_words.weight
    head = F.log_softmax(torch.cat([x @ words.double().T, x @ softmax.head_clusters.weight.double().T], -1), -1)
    pieces = [head[:, : edges[0]]]
    for cluster in range(len(edges) - 1):
        table, projection = source.band_weights(cluster + 1)
        down = projection.double() if core.tie_adaptive_proj else softmax.tail_projections[cluster].weight.double().T
        out = table.double() if core.tie_adaptive_weights else softmax.tail_outputs[cluster].weight.double()
        pieces.append(F.log_softmax((x @ down) @ out.T, -1) + head[:, edges[0] + cluster, None])
    return torch.cat(pieces, -1)


@pytest.mark.parametrize("options", OPTIONS)
def test_adaptive_input_and_softmax_equal_the_definitions(options: dict[str, Any]) -> None:
    core = config(**options)
    source, softmax = AdaptiveInput(core), AdaptiveSoftmax(core)
    randomized(source, softmax)
    ids = torch.randint(0, core.vocab_size, (3, 7))
    ids[0, :3] = torch.tensor([0, core.vocab_size - 1, options["cutoffs"][0]])  # band edges
    torch.testing.assert_close(source(ids).double(), expected_embedding(source, ids), atol=1e-5, rtol=1e-5)
    hidden = torch.randn(3, 7, core.hidden_size)
    log_probs = softmax.log_probs(hidden, tied_input=source)
    assert log_probs.shape == (3, 7, core.vocab_size)
    torch.testing.assert_close(log_probs.double().reshape(21, -1), expected_log_probs(softmax, source, hidden, core),
                               atol=1e-5, rtol=1e-5)
    targets = ids.reshape(-1)
    picked = softmax.target_log_probs(hidden.reshape(21, -1), targets, tied_input=source)
    torch.testing.assert_close(picked, log_probs.reshape(21, -1).gather(1, targets[:, None]).squeeze(1), atol=1e-5, rtol=1e-5)


def test_tied_parameters_are_not_held_twice() -> None:
    core = config([5, 20], 2.0, True, True)
    softmax = AdaptiveSoftmax(core)
    assert [name for name, _ in softmax.named_parameters()] == ["head_clusters.weight"]
    with pytest.raises(ValueError, match="pass tied_input"):
        softmax.log_probs(torch.randn(2, core.hidden_size))


def test_band_widths_follow_the_factor() -> None:
    source = AdaptiveInput(config([5, 20], 4.0, False, False))
    assert [band.weight.shape for band in source.bands] == [(5, 16), (15, 4), (30, 1)]
    assert all(p.weight.shape == (16, b.weight.shape[1]) for p, b in zip(source.projections, source.bands))
    assert source.bands[0].padding_idx == 1 and source.bands[1].padding_idx is None


@pytest.mark.parametrize("normalize_before", [True, False])
@pytest.mark.parametrize("norm, affine", [("layernorm", False), ("layernorm", True), ("scalenorm", True), ("rmsnorm", False)])
@pytest.mark.parametrize("chunk", [None, 4])
def test_final_norm_normalizes_the_last_layer_output(normalize_before: bool, norm: str, affine: bool, chunk: int | None) -> None:
    common = dict(BASE, normalization_type=norm, normalize_before_mega=normalize_before, normalize_before_ffn=normalize_before,
                  use_chunking=chunk is not None, chunk_size=chunk or -1)
    plain = MegaBackbone(MegaCoreConfig(**common)).eval()
    normed = MegaBackbone(MegaCoreConfig(**common, add_final_norm=True, final_norm_affine=affine)).eval()
    missing = normed.load_state_dict(plain.state_dict(), strict=False)
    assert all(key.startswith("final_norm.") for key in missing.missing_keys) and not missing.unexpected_keys
    assert bool(missing.missing_keys) == affine
    if affine:
        with torch.no_grad():
            for parameter in normed.final_norm.parameters():
                parameter.normal_(1.0, 0.3)
    ids = torch.randint(2, 50, (2, 9))
    with torch.no_grad():
        before = plain(ids).hidden.double()
        out = normed(ids, output_hidden_states=True)
    x = before
    if norm == "layernorm":
        weight = normed.final_norm.norm.weight.double() if affine else None
        bias = normed.final_norm.norm.bias.double() if affine else None
        expected = F.layer_norm(x, (x.shape[-1],), weight, bias, eps=1e-5)
    else:
        expected = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5)
        if affine:
            scale = normed.final_norm.norm.scalar if norm == "scalenorm" else normed.final_norm.norm.weight
            expected = expected * scale.double()
    torch.testing.assert_close(out.hidden.double(), expected, atol=1e-5, rtol=1e-5)
    assert out.hidden_states is not None and out.hidden_states[-1] is out.hidden


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(adaptive_input_cutoffs=[20, 5]), "adaptive_input_cutoffs must be strictly ascending"),
        (dict(adaptive_input_cutoffs=[5, 60]), "adaptive_input_cutoffs=.*at most vocab_size=50"),
        (dict(adaptive_softmax_cutoffs=[]), "adaptive_softmax_cutoffs must be None or a non-empty list"),
        (dict(adaptive_softmax_cutoffs=["5"]), "adaptive_softmax_cutoffs must be None or a non-empty list"),
        (dict(adaptive_softmax_cutoffs=[50]), "leaves a single band"),
        (dict(adaptive_input_cutoffs=[5, 20], adaptive_input_factor=0.5), "adaptive_input_factor must be a number >= 1"),
        (dict(adaptive_input_cutoffs=[5, 10, 20], adaptive_input_factor=8), "adaptive_input_factor=8 .* width"),
        (dict(adaptive_softmax_dropout_prob=1.5), "adaptive_softmax_dropout_prob must be a probability"),
        (dict(tie_adaptive_weights=True), "tie_adaptive_weights=True needs both"),
        (dict(adaptive_input_cutoffs=[5], adaptive_softmax_cutoffs=[6], tie_adaptive_weights=True), "equal to adaptive_softmax_cutoffs"),
        (dict(adaptive_input_cutoffs=[5], adaptive_softmax_cutoffs=[5], adaptive_softmax_factor=2, tie_adaptive_weights=True),
         "adaptive_input_factor equal to adaptive_softmax_factor"),
        (dict(tie_adaptive_proj=True), "tie_adaptive_proj=True needs tie_adaptive_weights=True"),
        (dict(add_final_norm="yes"), "add_final_norm must be true or false"),
        (dict(final_norm_affine=1), "final_norm_affine must be true or false"),
    ],
)
def test_bad_options_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MegaCoreConfig(**{**BASE, **changes})


def test_defaults_keep_the_hf_layout() -> None:
    core = MegaCoreConfig(**BASE)
    backbone = MegaBackbone(core)
    assert backbone.final_norm is None and isinstance(backbone.embedding_layer.word_embeddings, torch.nn.Embedding)
    assert not any(key.startswith("final_norm") for key in backbone.state_dict())
    assert dataclasses.replace(core, add_final_norm=True).add_final_norm
