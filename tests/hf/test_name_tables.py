"""``mega`` in transformers' model-type -> class-name tables, where BERT is (5.x).

transformers' own tooling reads these tables by name (its test utilities decide by
``MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES`` that inputs get a choices axis; pipelines check a
model's class against them). On 4.57 the deprecated MEGA is in them already.
"""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

import mega_plugin.adapters.hf as ours_hf  # noqa: E402
from mega_hf_helpers import TINY  # noqa: E402
from mega_plugin.adapters.hf import registration  # noqa: E402
from mega_plugin.adapters.hf.name_tables import NAME_TABLES, add_to_name_tables  # noqa: E402
from transformers.models.auto import modeling_auto  # noqa: E402

pytestmark = pytest.mark.hf


@pytest.mark.parametrize(("table_name", "class_name"), sorted(NAME_TABLES.items()))
def test_mega_is_in_every_table(table_name: str, class_name: str) -> None:
    registration.register_with_transformers()
    table = getattr(modeling_auto, table_name, None)
    if table is None:
        pytest.skip(f"this transformers has no {table_name}")
    assert table.get("mega") == class_name
    assert hasattr(ours_hf, class_name)


def test_every_table_that_has_bert_has_mega() -> None:
    """Every model table BERT is in has MEGA, but for a head MEGA lacks and the config table.

    On 5.x ``CONFIG_MAPPING_NAMES`` stays without "mega" on purpose (name_tables.py): with it,
    the lazy Auto mappings would import ``transformers.models.mega``, which 5.x does not have.
    """
    registration.register_with_transformers()
    no_such_head = {"MODEL_FOR_NEXT_SENTENCE_PREDICTION_MAPPING_NAMES", "CONFIG_MAPPING_NAMES"}
    lacking = [
        name
        for name in dir(modeling_auto)
        if name.endswith("_MAPPING_NAMES")
        and isinstance(getattr(modeling_auto, name), dict)
        and "bert" in getattr(modeling_auto, name)
        and "mega" not in getattr(modeling_auto, name)
        and name not in no_such_head
    ]
    assert lacking == []


def test_adding_is_idempotent() -> None:
    registration.register_with_transformers()
    assert add_to_name_tables() == []


def test_multiple_choice_through_the_auto_class_and_the_table() -> None:
    registration.register_with_transformers()
    model = transformers.AutoModelForMultipleChoice.from_config(ours_hf.MegaConfig(**TINY))
    assert type(model).__name__ == modeling_auto.MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES["mega"]

