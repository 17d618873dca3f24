"""``MegaLMConfig`` carries the core's fields without restating them, and stays a plain fairseq2 config."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest
from fs2_helpers import Fs2Assets, require_fairseq2

from mega_plugin.core.config import MegaCoreConfig

require_fairseq2()
pytestmark = pytest.mark.fairseq2


def _config_module() -> Any:
    from mega_plugin.adapters.fairseq2 import config

    return config


def test_every_core_field_is_carried_fixed_renamed_or_left_out() -> None:
    module = _config_module()
    lm_fields = {f.name: f for f in dataclasses.fields(module.MegaLMConfig)}
    lm_types = typing.get_type_hints(module.MegaLMConfig)
    core_types = typing.get_type_hints(MegaCoreConfig)
    for core_field in dataclasses.fields(MegaCoreConfig):
        name = core_field.name
        if name in module.FIXED_CORE_FIELDS:
            assert name not in lm_fields, name
            continue
        if name in module.UNCARRIED_CORE_FIELDS:
            assert name not in lm_fields, name
            continue
        lm_name = module.RENAMED_CORE_FIELDS.get(name, name)
        assert lm_name in lm_fields, f"core field {name} has no MegaLMConfig counterpart"
        assert lm_types[lm_name] == core_types[name], name
        if lm_name == name:
            expected_default = module.LM_DEFAULTS.get(name, core_field.default)
            assert lm_fields[name].default == expected_default, name


def test_lm_defaults_name_core_fields_and_differ_from_them() -> None:
    module = _config_module()
    core_defaults = {f.name: f.default for f in dataclasses.fields(MegaCoreConfig)}
    for name, value in module.LM_DEFAULTS.items():
        assert name in core_defaults, f"LM_DEFAULTS names {name}, which is no core field"
        assert value != core_defaults[name], f"LM_DEFAULTS[{name!r}] restates the core default"


def test_core_round_trip_keeps_every_field() -> None:
    module = _config_module()
    core = MegaCoreConfig(
        vocab_size=77, hidden_size=24, is_decoder=True, bidirectional=False, use_chunking=True, chunk_size=5,
        truncation=3, pad_token_id=0, normalization_type="rmsnorm", attention_activation="laplace",
    )  # fmt: skip
    lm = module.MegaLMConfig.from_core(core, max_seq_len=99)
    assert lm.pad_idx == 0 and lm.max_seq_len == 99
    assert lm.to_core() == dataclasses.replace(core, extra={})


def test_bad_core_field_of_the_lm_config_is_named() -> None:
    module = _config_module()
    with pytest.raises(ValueError, match="attention_activation"):
        module.MegaLMConfig(attention_activation="tanh").to_core()


@pytest.mark.parametrize(
    "field,value", [("input_type", "real_numbers"), ("classifier_style", "lra"), ("classifier_dual_input", True)]
)
def test_lra_fields_are_refused_by_the_causal_lm(field: str, value: Any) -> None:
    # the LRA options are HF classifier options: the fairseq2 LM embeds token ids and has no classifier
    module = _config_module()
    with pytest.raises(ValueError, match=f"{field}=.*allowed values"):
        module.MegaLMConfig(**{field: value}).to_core()


def test_asset_card_overrides_fields_by_name(fs2_assets: Fs2Assets) -> None:
    # A card with an arch and a partial model_config, resolved by the family as fairseq2 does.
    from fairseq2.assets import AssetCard
    from fairseq2.models.family import ModelFamily
    from fairseq2.runtime.dependency import get_dependency_resolver

    family = get_dependency_resolver().resolve(ModelFamily, key="mega")
    card = AssetCard(
        "mega_config_override_test",
        {"model_family": "mega", "model_arch": "tiny", "model_config": {"hidden_size": 48, "pad_idx": 0}},
    )
    config = family.get_model_config(card)
    tiny = family.maybe_get_arch_config("tiny")
    assert config.hidden_size == 48 and config.pad_idx == 0
    assert dataclasses.replace(config, hidden_size=tiny.hidden_size, pad_idx=tiny.pad_idx) == tiny
