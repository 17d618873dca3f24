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
