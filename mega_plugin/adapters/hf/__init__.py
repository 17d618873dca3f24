"""Hugging Face transformers adapter: ``MegaConfig``, ``MegaModel`` and the heads.

Importing ``mega_plugin`` registers them with the Auto classes; see
:func:`register_with_transformers`.
"""

from __future__ import annotations

from .cache import MegaCache
from .configuration_mega import MegaConfig
from .modeling_classification import (
    MegaClassificationHead,
    MegaForMultipleChoice,
    MegaForQuestionAnswering,
    MegaForSequenceClassification,
    MegaForTokenClassification,
)
from .modeling_image import MegaForImageClassification
from .modeling_lm import MegaForCausalLM, MegaForMaskedLM
from .modeling_mega import MegaModel, MegaPooler, MegaPreTrainedModel
from .registration import AUTO_CLASSES, register_with_transformers
from .static_decoding import static_decoder

__all__ = [
    "AUTO_CLASSES",
    "MegaCache",
    "MegaClassificationHead",
    "MegaConfig",
    "MegaForCausalLM",
    "MegaForImageClassification",
    "MegaForMaskedLM",
    "MegaForMultipleChoice",
    "MegaForQuestionAnswering",
    "MegaForSequenceClassification",
    "MegaForTokenClassification",
    "MegaModel",
    "MegaPooler",
    "MegaPreTrainedModel",
    "register_with_transformers",
    "static_decoder",
]
