"""Put ``mega`` into transformers' model-type -> class-name tables (5.x), as built-in models are.

transformers' own tooling reads ``MODEL_*_MAPPING_NAMES`` of ``transformers.models.auto.modeling_auto``
by name, not the registered Auto classes: its test utilities, for example, decide by
``MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES`` that a head takes (batch, choices, length) inputs and
by ``MODEL_MAPPING_NAMES`` that a class is a base model without a loss. On 4.57 the deprecated
MEGA put the same class names there already; on 5.x we add them.

``CONFIG_MAPPING_NAMES`` is left alone on purpose: a model type in both the config table and a
model table makes the lazy Auto mappings import ``transformers.models.mega``, which 5.x does not
have. The Auto classes find our classes through ``register`` (registration.py) instead.
"""

from __future__ import annotations

from typing import Final

MODEL_TYPE: Final = "mega"

# Table name in transformers.models.auto.modeling_auto -> our class name.
NAME_TABLES: Final[dict[str, str]] = {
    "MODEL_MAPPING_NAMES": "MegaModel",
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES": "MegaForCausalLM",
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES": "MegaForMaskedLM",
    "MODEL_FOR_PRETRAINING_MAPPING_NAMES": "MegaForMaskedLM",
    "MODEL_WITH_LM_HEAD_MAPPING_NAMES": "MegaForMaskedLM",
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES": "MegaForSequenceClassification",
    "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES": "MegaForMultipleChoice",
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES": "MegaForTokenClassification",
    "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES": "MegaForQuestionAnswering",
    # feature-extraction pipelines and sentence-embedding tooling read this one (BERT is in it)
    "MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES": "MegaModel",
}

# transformers.models.auto.configuration_auto.MODEL_NAMES_MAPPING: model type -> display name.
DISPLAY_NAME: Final = "MEGA"


def add_to_name_tables() -> list[str]:
    """Add ``mega`` to every table above that exists and lacks it; returns the tables changed."""
    from transformers.models.auto import configuration_auto, modeling_auto

    changed = []
    for table_name, class_name in NAME_TABLES.items():
        table = getattr(modeling_auto, table_name, None)
        if table is None or MODEL_TYPE in table:
            continue
        table[MODEL_TYPE] = class_name
        changed.append(table_name)
    display_names = getattr(configuration_auto, "MODEL_NAMES_MAPPING", None)
    if display_names is not None and MODEL_TYPE not in display_names:
        display_names[MODEL_TYPE] = DISPLAY_NAME
        changed.append("MODEL_NAMES_MAPPING")
    return changed
