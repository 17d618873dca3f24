"""transformers' own common test mixins, run against our MEGA classes.

The mixins come from the sdist of the transformers installed in this venv
(``tests/_support/transformers_sdist.py``; ``scripts/bootstrap_envs.sh`` downloads it). Our
``MegaModelTester`` (``tests/hf/mega_model_tester.py``) speaks their protocol. Every test the
mixins define runs, except those in the two tables below:

- ``CANNOT_APPLY``: the feature cannot apply to MEGA, or the sdist lacks what the test needs
  (the reason is next to each name);
- ``FIXED_BY_OTHER_HELPER``: strict xfails for defects another change fixes; each entry is
  removed when that change lands (a strict xfail fails as soon as the test passes).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
import unittest
import unittest.mock
from pathlib import Path
from typing import Callable, Mapping

import pytest

pytestmark = pytest.mark.hf

pytest.importorskip("transformers")
pytest.importorskip("parameterized", reason="parameterized (dev extra) is what transformers' mixins import")

from _support import transformers_sdist  # noqa: E402

try:
    COMMON = transformers_sdist.load_module("test_modeling_common")
    CONFIG_COMMON = transformers_sdist.load_module("test_configuration_common")
except transformers_sdist.SdistMissing as missing:
    pytest.skip(str(missing), allow_module_level=True)

_spec = importlib.util.spec_from_file_location("mega_model_tester", Path(__file__).with_name("mega_model_tester.py"))
assert _spec is not None and _spec.loader is not None
_tester_module = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("mega_model_tester", _tester_module)
_spec.loader.exec_module(_tester_module)
MegaModelTester = _tester_module.MegaModelTester

from mega_plugin.adapters.hf import (  # noqa: E402
    MegaConfig,
    MegaForCausalLM,
    MegaForMaskedLM,
    MegaForMultipleChoice,
    MegaForQuestionAnswering,
    MegaForSequenceClassification,
    MegaForTokenClassification,
    MegaModel,
)

NO_GENERATION_HELPERS = (
    "the transformers sdist ships no tests/generation/test_utils.py, so GenerationTesterMixin's "
    "tests cannot be imported; generate() is covered by tests/hf/test_generation.py"
)

ONE_HEAD = (
    "MEGA's gated attention has a single head per layer (its width is the shared representation): "
    "there is no head to prune or mask (4.57 mixins; 5.x dropped head pruning and head_mask)"
)

# test name -> why it cannot apply to MEGA (or to tests run from the sdist).
CANNOT_APPLY: Mapping[str, str] = {
    "test_generation_tester_mixin_inheritance": NO_GENERATION_HELPERS,
    "test_head_pruning": ONE_HEAD,
    "test_head_pruning_integration": ONE_HEAD,
    "test_head_pruning_save_load_from_config_init": ONE_HEAD,
    "test_head_pruning_save_load_from_pretrained": ONE_HEAD,
    "test_headmasking": ONE_HEAD,
}

# test name -> "fixed by <change>": strict xfails for defects another change fixes, removed when it
# lands (a strict xfail fails as soon as the test passes). Empty: every known defect is fixed.
FIXED_BY_OTHER_HELPER: Mapping[str, str] = {}


def apply_tables(test_class: type) -> type:
    """Skip (CANNOT_APPLY) or strictly xfail (FIXED_BY_OTHER_HELPER) the named tests."""
    for name in dir(test_class):
        if not name.startswith("test_"):
            continue
        method: Callable = getattr(test_class, name)
        if name in CANNOT_APPLY:
            setattr(test_class, name, unittest.skip(CANNOT_APPLY[name])(method))
        elif name in FIXED_BY_OTHER_HELPER:
            setattr(test_class, name, expected_failure(method, FIXED_BY_OTHER_HELPER[name]))
    return test_class


def expected_failure(method: Callable, reason: str) -> Callable:
    """A strict xfail that also sees failures inside ``subTest`` blocks.

    pytest's xfail marker cannot: a failing subtest is recorded, not raised, and the test
    itself then counts as an unexpected pass. Here ``subTest`` is a no-op, so the first
    failure propagates; a test that no longer fails fails, naming the table to update.
    """

    @functools.wraps(method)
    def run(self: unittest.TestCase) -> None:
        try:
            with unittest.mock.patch.object(self, "subTest", lambda *_, **__: contextlib.nullcontext()):
                method(self)
        except (Exception, AssertionError):
            pytest.xfail(reason)
        pytest.fail(f"{method.__name__} passes now: remove it from FIXED_BY_OTHER_HELPER ({reason})")

    return run


ENCODER_CLASSES = (
    MegaModel,
    MegaForMaskedLM,
    MegaForSequenceClassification,
    MegaForTokenClassification,
    MegaForMultipleChoice,
    MegaForQuestionAnswering,
)


class _MegaCommonTests(COMMON.ModelTesterMixin):
    """What every variant shares: the heads' own checks and the config checks."""

    chunking = False
    decoder = False
    all_model_classes = ENCODER_CLASSES
    all_generative_model_classes = ()
    test_resize_embeddings = True

    def setUp(self) -> None:
        self.model_tester = MegaModelTester(self, chunking=self.chunking, decoder=self.decoder)
        self.config_tester = CONFIG_COMMON.ConfigTester(self, config_class=MegaConfig, hidden_size=16)

    def test_config(self) -> None:
        self.config_tester.run_common_tests()

    def test_model(self) -> None:
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        self.model_tester.create_and_check_model(config, inputs)


@apply_tables
class MegaEncoderTest(_MegaCommonTests, unittest.TestCase):
    """Bidirectional MEGA, every encoder head, attention over the whole sequence."""

    def _labels(self) -> tuple:
        return self.model_tester.prepare_config_and_inputs()

    def test_for_masked_lm(self) -> None:
        config, inputs, _ = self._labels()
        self.model_tester.create_and_check_masked_lm(config, inputs)

    def test_for_sequence_classification(self) -> None:
        config, inputs, labels = self._labels()
        self.model_tester.create_and_check_sequence_classification(config, inputs, labels["sequence_labels"])

    def test_for_token_classification(self) -> None:
        config, inputs, labels = self._labels()
        self.model_tester.create_and_check_token_classification(config, inputs, labels["token_labels"])

    def test_for_multiple_choice(self) -> None:
        config, inputs, labels = self._labels()
        self.model_tester.create_and_check_multiple_choice(config, inputs, labels["choice_labels"])

    def test_for_question_answering(self) -> None:
        config, inputs, labels = self._labels()
        self.model_tester.create_and_check_question_answering(config, inputs, labels["sequence_labels"])


@apply_tables
class MegaChunkedEncoderTest(MegaEncoderTest):
    """The same with Mega-chunk (chunk 4 of a length-8 sequence)."""

    chunking = True

    def test_attention_outputs(self) -> None:
        _attention_per_chunk(self.model_tester)
        super().test_attention_outputs()


def _attention_per_chunk(tester: MegaModelTester) -> None:
    """Tell the mixin the attention shape of Mega-chunk: (B, n_chunks, chunk, chunk).

    With chunking each chunk attends only within itself, and the weights come out per chunk
    (as the 4.57 reference returns them); the mixin reads that shape as (heads, query length,
    key length) from the tester, so the chunk count stands in for the heads.
    """
    tester.num_attention_heads = tester.seq_length // tester.chunk_size
    tester.encoder_seq_length = tester.key_length = tester.chunk_size


@apply_tables
class MegaDecoderTest(_MegaCommonTests, unittest.TestCase):
    """Causal MEGA with cross-attention to an encoder's states (chunking on)."""

    chunking = True
    decoder = True
    all_model_classes = (MegaModel, MegaForCausalLM)
    # inputs the mixins' eager-vs-sdpa check passes besides input_ids (cross-attention needs them)
    additional_model_inputs = ["encoder_hidden_states", "encoder_attention_mask"]

    def test_attention_outputs(self) -> None:
        _attention_per_chunk(self.model_tester)
        super().test_attention_outputs()

    def test_for_causal_lm(self) -> None:
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        self.model_tester.create_and_check_causal_lm(config, inputs)
