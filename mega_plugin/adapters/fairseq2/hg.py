"""fairseq2's ``HuggingFaceConverter`` for the ``mega`` family.

Registered by the extension, so ``python -m fairseq2.models.utils.hg_export <card> <dir>`` and
recipes that export to Hugging Face find it. fairseq2 saves through ``transformers.MegaConfig``,
which transformers 4.57 still exports (the deprecated MEGA); with transformers 5 use
``mega-plugin export-hf`` instead, which writes the same directory without that class.
"""

from __future__ import annotations

from typing import Final, final

from fairseq2.models.hg import HuggingFaceConfig, HuggingFaceConverter

from .config import MegaLMConfig
from .interop import to_hf_state_dict

HF_CONFIG_CLASS: Final = "MegaConfig"
"""Name of the HF config class (``transformers.MegaConfig``)."""

_NOT_CONFIG_ATTRIBUTES: Final = ("model_type", "architectures")
# fairseq2 sets ``architectures`` itself; ``model_type`` is a class attribute of MegaConfig.


def _check_config(config: object) -> MegaLMConfig:
    if not isinstance(config, MegaLMConfig):
        raise TypeError(f"config must be a MegaLMConfig, got {type(config).__name__}")
    return config


@final
class MegaHuggingFaceConverter(HuggingFaceConverter):
    """``MegaLMConfig`` -> HF ``MegaConfig`` fields; fairseq2 keys -> ``MegaForCausalLM`` keys."""

    def to_hg_config(self, config: object) -> HuggingFaceConfig:
        hf_config = _check_config(config).to_hf_config()
        data = {key: value for key, value in hf_config.items() if key not in _NOT_CONFIG_ATTRIBUTES}
        return HuggingFaceConfig(data, HF_CONFIG_CLASS, hf_config["architectures"])

    def to_hg_state_dict(self, state_dict: dict[str, object], config: object) -> dict[str, object]:
        return to_hf_state_dict(state_dict, _check_config(config))
