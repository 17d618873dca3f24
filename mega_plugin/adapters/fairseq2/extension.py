"""The fairseq2 extension entry point: registers the ``mega`` model family.

Declared in pyproject as ``[project.entry-points."fairseq2.extension"] mega``. fairseq2 runs
it inside ``init_fairseq2()``; the entry point is installed whatever extras were chosen, so
this module imports fairseq2 (and the family's modules) only inside the functions: importing
it costs nothing beyond the ``mega_plugin`` package itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from fairseq2.runtime.dependency import DependencyContainer

CARDS_PACKAGE: Final = "mega_plugin.adapters.fairseq2.cards"
"""Package whose YAML files are the family's built-in asset cards."""


def setup_mega_extension(container: DependencyContainer) -> None:
    """Register the ``mega``, ``mega_seq2seq`` and ``mega_classifier`` families, their archs, the HF converter and
    the package asset cards."""
    from fairseq2.composition import register_model_family, register_package_assets
    from fairseq2.models.hg import HuggingFaceConverter

    from .training_hooks import apply_ac_to_mega_lm, apply_fsdp_to_mega_lm, compile_mega_lm
    from .config import MEGA_FAMILY, MegaLMConfig
    from .factory import create_mega_model
    from .hg import MegaHuggingFaceConverter
    from .interop import convert_mega_state_dict
    from .model import MegaCausalLM

    register_model_family(
        container,
        MEGA_FAMILY,
        MegaCausalLM,
        MegaLMConfig,
        factory=create_mega_model,
        supports_meta=True,
        state_dict_converter=convert_mega_state_dict,
        compiler=compile_mega_lm,
        fsdp_applier=apply_fsdp_to_mega_lm,
        layerwise_ac_applier=apply_ac_to_mega_lm,
    )
    container.register_type(HuggingFaceConverter, MegaHuggingFaceConverter, key=MEGA_FAMILY)
    register_mega_archs(container)
    register_mega_seq2seq_family(container)
    register_mega_classifier_family(container)
    register_package_assets(container, CARDS_PACKAGE)


def register_mega_classifier_family(container: DependencyContainer) -> None:
    """The ``mega_classifier`` family: the LRA classifiers (and any HF MEGA sequence/image classifier)."""
    from fairseq2.composition import register_model_family

    from .classifier_config import MEGA_CLASSIFIER_FAMILY, MegaClassifierConfig
    from .classifier_model import (
        MegaSequenceClassifier,
        convert_mega_classifier_state_dict,
        create_mega_classifier_model,
    )

    register_model_family(
        container,
        MEGA_CLASSIFIER_FAMILY,
        MegaSequenceClassifier,
        MegaClassifierConfig,
        factory=create_mega_classifier_model,
        supports_meta=False,
        state_dict_converter=convert_mega_classifier_state_dict,
    )


def register_mega_seq2seq_family(container: DependencyContainer) -> None:
    """The ``mega_seq2seq`` family (encoder-decoder, translation) and its ``mega_wmt_en_de`` arch."""
    from fairseq2.composition import register_model_family
    from fairseq2.runtime.config_registry import ConfigRegistrar

    from .seq2seq_config import MEGA_SEQ2SEQ_FAMILY, MegaSeq2SeqConfig, wmt_en_de
    from .seq2seq_factory import create_mega_seq2seq_model
    from .seq2seq_interop import convert_mega_seq2seq_state_dict
    from .seq2seq_model import MegaSeq2SeqModel

    register_model_family(
        container,
        MEGA_SEQ2SEQ_FAMILY,
        MegaSeq2SeqModel,
        MegaSeq2SeqConfig,
        factory=create_mega_seq2seq_model,
        supports_meta=True,
        state_dict_converter=convert_mega_seq2seq_state_dict,
    )
    ConfigRegistrar(container, MegaSeq2SeqConfig)("mega_wmt_en_de")(wmt_en_de)


def register_mega_archs(container: DependencyContainer) -> None:
    """One arch per registered preset, in its causal form (see :mod:`.archs`)."""
    from fairseq2.runtime.config_registry import ConfigRegistrar

    from .archs import preset_archs
    from .config import MegaLMConfig

    arch = ConfigRegistrar(container, MegaLMConfig)
    for name, provider in preset_archs().items():
        arch(name)(provider)
