"""``MegaConfig`` takes every architectural default from ``MegaCoreConfig``; a test pins each one.

The core dataclass is the single source of the defaults (``MegaConfig.__init__`` reads them);
these tests compare a bare ``MegaConfig()`` with a bare ``MegaCoreConfig()`` field by field, the
signature's defaults with the core's, and the HF-only defaults with the transformers-free HF
layout and, where the fairseq2 environment has it, with the transformers 4.57 reference.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Any, Mapping

import pytest

transformers = pytest.importorskip("transformers")

from mega_hf_helpers import REFERENCE_PACKAGE  # noqa: E402
from mega_plugin.adapters.hf import MegaConfig  # noqa: E402
from mega_plugin.core.config import MegaCoreConfig  # noqa: E402
from mega_plugin.core.config_lm import LanguageModelOptions  # noqa: E402
from mega_plugin.core.config_lra import LraOptions  # noqa: E402
from mega_plugin.formats.hf import HF_ONLY_DEFAULTS  # noqa: E402

NOT_IN_MEGA_CONFIG = ("extra", "norm_eps")
"""Core fields MegaConfig does not carry: ``extra`` is no field, ``norm_eps`` is fixed in the HF layout."""

SHARED_FIELDS = tuple(f.name for f in dataclasses.fields(MegaCoreConfig) if f.name not in NOT_IN_MEGA_CONFIG)
"""Every core field MegaConfig carries."""

OUR_FIELDS = (
    "ema_kernel",
    "attention_kernel",
    "scale_embeddings",
    "cross_attention_max_positions",
    *(f.name for f in dataclasses.fields(LanguageModelOptions)),
    *(f.name for f in dataclasses.fields(LraOptions)),
)
"""Fields MegaConfig has and the transformers 4.57 reference does not."""


def differing_defaults(hf_config: Any, core: MegaCoreConfig) -> dict[str, tuple[Any, Any]]:
    """Shared field -> (MegaConfig value, core value) where the two differ in value or type."""
    differing = {}
    for name in SHARED_FIELDS:
        ours, theirs = getattr(hf_config, name), getattr(core, name)
        if ours != theirs or type(ours) is not type(theirs):
            differing[name] = (ours, theirs)
    return differing


def test_the_shared_fields_include_the_token_and_decoder_fields() -> None:
    assert {"pad_token_id", "is_decoder", "add_cross_attention", "ema_kernel", "vocab_size"} <= set(SHARED_FIELDS)


def test_every_shared_default_is_the_core_default() -> None:
    assert differing_defaults(MegaConfig(), MegaCoreConfig()) == {}


@pytest.mark.parametrize(
    "name, value", [("hidden_size", 96), ("dropout_prob", 0.25), ("use_chunking", True), ("truncation", 7)]
)
def test_a_differing_default_is_reported(name: str, value: Any) -> None:
    # The comparison above would catch a MegaConfig default that drifted from the core's.
    assert differing_defaults(MegaConfig(**{name: value}), MegaCoreConfig()) == {
        name: (value, getattr(MegaCoreConfig(), name))
    }


def test_a_default_of_the_wrong_type_is_reported() -> None:
    assert set(differing_defaults(MegaConfig(use_chunking=0), MegaCoreConfig())) == {"use_chunking"}


def test_signature_names_every_shared_field_with_the_core_default() -> None:
    parameters = inspect.signature(MegaConfig.__init__).parameters
    core = MegaCoreConfig()
    for name in SHARED_FIELDS:
        assert name in parameters, f"MegaConfig.__init__ has no parameter {name}"
        assert parameters[name].default == getattr(core, name), name
    hf_only = {
        name
        for name, parameter in parameters.items()
        if name not in SHARED_FIELDS and parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    } - {"self"}
    assert hf_only == set(HF_ONLY_DEFAULTS)


def test_hf_only_defaults_match_the_hf_layout() -> None:
    config = MegaConfig()
    assert {name: getattr(config, name) for name in HF_ONLY_DEFAULTS} == dict(HF_ONLY_DEFAULTS)


def test_defaults_match_the_transformers_4_57_reference() -> None:
    try:
        configuration = importlib.import_module(f"{REFERENCE_PACKAGE}.configuration_mega")
    except ImportError:
        pytest.skip("needs transformers 4.57 (the deprecated MEGA)")
    reference = configuration.MegaConfig()
    ours = MegaConfig()
    names = [name for name in (*SHARED_FIELDS, *HF_ONLY_DEFAULTS) if name not in OUR_FIELDS]
    assert {n: getattr(ours, n) for n in names} == {n: getattr(reference, n) for n in names}


def _saved_values(config: Any) -> Mapping[str, Any]:
    values = config.to_dict()
    for key in ("transformers_version", "_name_or_path", "dtype", "torch_dtype"):
        values.pop(key, None)
    return values


def test_from_pretrained_and_diff_dict_round_trip(tmp_path: Path) -> None:
    config = MegaConfig(hidden_size=64, is_decoder=True, bidirectional=False, use_chunking=True, chunk_size=16)
    config.save_pretrained(tmp_path)
    loaded = MegaConfig.from_pretrained(tmp_path)
    assert _saved_values(loaded) == _saved_values(config)
    diff = config.to_diff_dict()
    assert diff["hidden_size"] == 64 and diff["is_decoder"] is True and diff["chunk_size"] == 16
    assert _saved_values(MegaConfig(**{k: v for k, v in diff.items() if k != "model_type"})) == _saved_values(config)


def test_auto_config_for_model_and_positional_arguments() -> None:
    import mega_plugin  # noqa: F401  (registers "mega" with the Auto classes)

    config = transformers.AutoConfig.for_model("mega", hidden_size=48, add_token_type_embeddings=True)
    assert isinstance(config, MegaConfig)
    assert config.hidden_size == 48 and config.add_token_type_embeddings is True
    assert differing_defaults(config, MegaCoreConfig(hidden_size=48, add_token_type_embeddings=True)) == {}
    positional = MegaConfig(1000, 64, 2)  # the reference's parameter order
    assert (positional.vocab_size, positional.hidden_size, positional.num_hidden_layers) == (1000, 64, 2)
    assert positional.to_core().hidden_size == 64
