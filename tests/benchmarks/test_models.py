"""Every benchmark builds our model through ``models.build_ours`` (and nowhere else), and the
reference through ``models.build_reference`` with the weights of ours."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from mega_plugin.benchmarks import decode, models
from mega_plugin.benchmarks.measure import Case, measure_case
from mega_plugin.core.config import MegaCoreConfig
from mega_plugin.core.backbone import MegaBackbone


@dataclass
class Builds:
    """What was built while a test ran."""

    through_build_ours: list[MegaCoreConfig] = field(default_factory=list)
    backbones: int = 0
    """Every ``MegaBackbone`` constructed, whoever constructed it."""


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Builds:
    """Records the calls of ``build_ours`` (where the benchmarks look it up) and every backbone built."""
    record = Builds()
    build_ours = models.build_ours
    backbone_init = MegaBackbone.__init__

    def recording_build_ours(config: MegaCoreConfig) -> MegaBackbone:
        record.through_build_ours.append(config)
        return build_ours(config)

    def counting_init(self: MegaBackbone, *args: Any, **kwargs: Any) -> None:
        record.backbones += 1
        backbone_init(self, *args, **kwargs)

    monkeypatch.setattr(models, "build_ours", recording_build_ours)
    monkeypatch.setattr(decode, "build_ours", recording_build_ours)
    monkeypatch.setattr(MegaBackbone, "__init__", counting_init)
    return record


def test_build_model_builds_ours_through_build_ours(builds: Builds) -> None:
    model, forward = models.build_model("ours", chunk_size=64, max_length=128)
    assert isinstance(model, MegaBackbone)
    assert builds.backbones == len(builds.through_build_ours) == 1
    assert builds.through_build_ours[0].chunk_size == 64
    with torch.inference_mode():
        assert forward(torch.randint(3, 1000, (1, 128))).shape == (1, 128, 256)


def test_measured_cases_build_ours_through_build_ours(builds: Builds) -> None:
    result = measure_case(Case("ours", "forward", 16, None, 1), repeats=1, threads=1)
    assert result.error is None and result.seconds is not None
    assert builds.backbones == len(builds.through_build_ours) == 1


def test_decode_benchmark_builds_ours_through_build_ours(builds: Builds) -> None:
    results = decode.run_decode_benchmark(contexts=(4,), steps=1, chunk_sizes=(4, None))
    assert [r.chunk_size for r in results] == [4, None]
    assert builds.backbones == len(builds.through_build_ours) == 2
    assert all(config.is_decoder for config in builds.through_build_ours)


@pytest.mark.reference
def test_reference_holds_the_weights_of_ours(builds: Builds) -> None:
    ours, ours_forward = models.build_model("ours", chunk_size=64, max_length=128)
    reference, reference_forward = models.build_model("reference", chunk_size=64, max_length=128)
    assert builds.backbones == len(builds.through_build_ours) == 2
    assert not isinstance(reference, MegaBackbone)
    tokens = torch.randint(3, 1000, (2, 128))
    with torch.inference_mode():
        difference = (ours_forward(tokens) - reference_forward(tokens)).abs().max().item()
    assert difference < 1e-4


def test_reference_is_refused_with_the_reason_where_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "reference_unavailable", lambda: "not here")
    config = MegaCoreConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1)
    with pytest.raises(RuntimeError, match="not here"):
        models.build_reference(config, state_dict={})


@pytest.mark.parametrize("preset", models.PAPER_PRESETS)
def test_a_paper_preset_keeps_its_architecture_and_takes_the_benchmark_vocabulary(preset: str) -> None:
    from mega_plugin.core.presets import PRESETS

    paper = PRESETS[preset]()
    config = models.case_config(chunk_size=None, max_length=8192, preset=preset)
    for name in ("hidden_size", "num_hidden_layers", "intermediate_size", "nffn_hidden_size", "chunk_size",
                 "normalization_type", "is_decoder", "bidirectional", "shared_representation_size"):
        assert getattr(config, name) == getattr(paper, name), name
    assert config.vocab_size == 1000 and config.max_positions >= 8192
    assert config.dropout_prob == config.hidden_dropout_prob == config.attention_probs_dropout_prob == 0.0
    with pytest.raises(ValueError, match="preset='gpt2'.*wikitext103, enwik8"):
        models.case_config(chunk_size=None, max_length=64, preset="gpt2")


@pytest.mark.reference
@pytest.mark.parametrize(
    "overrides",
    [
        dict(is_decoder=True, bidirectional=False, normalization_type="layernorm"),  # the LM presets' kind
        dict(normalize_before_mega=False, normalize_before_ffn=False, attention_activation="laplace", activation="gelu"),
        dict(relative_positional_bias="simple"),
        dict(normalization_type="layernorm", activation="relu"),  # (rmsnorm differs: README)
    ],
    ids=["causal-layernorm", "postnorm-laplace-gelu", "simple", "layernorm-relu"],
)
def test_the_reference_mirrors_every_architecture_field_of_ours(overrides: dict[str, Any]) -> None:
    """A preset case is only a comparison if the reference computes the same function."""
    config = MegaCoreConfig(
        vocab_size=1000, hidden_size=32, num_hidden_layers=2, intermediate_size=48, nffn_hidden_size=40,
        shared_representation_size=16, ema_projection_size=4, use_chunking=True, chunk_size=8, max_positions=64,
        dropout_prob=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, nffn_activation_dropout_prob=0.0,
        **overrides,
    )
    torch.manual_seed(0)
    ours = models.build_ours(config).eval()
    reference = models.build_reference(config, state_dict=ours.state_dict()).eval()
    tokens = torch.randint(3, 1000, (2, 32))
    with torch.inference_mode():
        expected = reference(tokens).last_hidden_state
        torch.testing.assert_close(ours(tokens).hidden, expected, atol=1e-5, rtol=1e-5)


def test_a_preset_case_measures_the_preset(builds: Builds) -> None:
    result = measure_case(Case("ours", "forward", 16, 2048, 1, "enwik8"), repeats=1, threads=1)
    assert result.error is None and result.seconds is not None
    (config,) = builds.through_build_ours
    assert (config.hidden_size, config.num_hidden_layers, config.chunk_size, config.is_decoder) == (512, 12, 2048, True)


@pytest.mark.parametrize("implementation", ["ours", "llama"])
def test_checkpointing_is_switched_on_for_each_implementation(implementation: str) -> None:
    from mega_plugin.benchmarks.models import build_model, enable_checkpointing

    model, _ = build_model(implementation, chunk_size=None, max_length=16)
    enable_checkpointing(model)
    if implementation == "ours":
        assert all(block.gradient_checkpointing for block in model.layers)
    else:
        assert model.is_gradient_checkpointing


def test_a_checkpointed_training_case_runs_and_a_forward_one_is_refused() -> None:
    result = measure_case(Case("ours", "train", 16, 8, 1, checkpointing=True), repeats=1, threads=1)
    assert result.error is None and result.seconds is not None and result.seconds > 0
    with pytest.raises(ValueError, match="checkpointing=True needs mode='train'"):
        measure_case(Case("ours", "forward", 16, 8, 1, checkpointing=True), repeats=1, threads=1)
