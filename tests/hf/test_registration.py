"""``import mega_plugin`` registers MegaConfig and every head with the Auto classes (4.57 and 5.x).

On 4.57 the deprecated built-in MEGA must lose every Auto mapping that mentions it (a mapping left
alone would resolve our ``MegaConfig`` to the deprecated model by class name); on 5.x "mega" is
free. Registration is idempotent and says once, at INFO level, that it overrides the built-in.
"""

from __future__ import annotations

import logging

import pytest

transformers = pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
import mega_plugin.adapters.hf as ours_hf  # noqa: E402
from mega_hf_helpers import TINY  # noqa: E402
from mega_plugin.adapters.hf import registration  # noqa: E402
from transformers.models.auto import modeling_auto  # noqa: E402

SIX_HEADS_AND_BASE = {
    "AutoModel": "MegaModel",
    "AutoModelForCausalLM": "MegaForCausalLM",
    "AutoModelForMaskedLM": "MegaForMaskedLM",
    "AutoModelForSequenceClassification": "MegaForSequenceClassification",
    "AutoModelForMultipleChoice": "MegaForMultipleChoice",
    "AutoModelForTokenClassification": "MegaForTokenClassification",
    "AutoModelForQuestionAnswering": "MegaForQuestionAnswering",
}


def auto_classes_mentioning_mega() -> dict[str, type]:
    """Every Auto model class of this transformers whose built-in name table has a "mega" entry."""
    found = {}
    for name in dir(modeling_auto):
        auto_class = getattr(modeling_auto, name)
        mapping = getattr(auto_class, "_model_mapping", None)
        names = getattr(mapping, "_model_mapping", None)
        if name.startswith("AutoModel") and isinstance(names, dict) and "mega" in names:
            found[name] = auto_class
    return found


def test_auto_config_returns_ours() -> None:
    config = transformers.AutoConfig.for_model("mega", **TINY)
    assert type(config) is ours_hf.MegaConfig


@pytest.mark.parametrize(("auto_name", "class_name"), sorted(SIX_HEADS_AND_BASE.items()))
def test_every_head_is_registered(auto_name: str, class_name: str) -> None:
    auto_class = getattr(transformers, auto_name)
    config = ours_hf.MegaConfig(**TINY, num_labels=2)
    model = auto_class.from_config(config)
    assert type(model) is getattr(ours_hf, class_name)


def test_every_builtin_mapping_that_mentions_mega_returns_ours() -> None:
    mentioning = auto_classes_mentioning_mega()
    if transformers.__version__.startswith("4."):
        # The 4.57 tables named in notes/transformers.md, at least.
        assert {"AutoModel", "AutoModelForPreTraining", "AutoModelWithLMHead", *SIX_HEADS_AND_BASE} <= set(mentioning)
    else:
        # 5.x has no MEGA of its own; registration puts "mega" into the name tables
        # (name_tables.py), so every Auto class of a head we have mentions it.
        assert set(SIX_HEADS_AND_BASE) <= set(mentioning), sorted(mentioning)
    for name, auto_class in mentioning.items():
        resolved = auto_class._model_mapping[ours_hf.MegaConfig]
        assert resolved.__module__.startswith("mega_plugin."), (name, resolved)


def test_registration_is_idempotent() -> None:
    first = registration.register_with_transformers()
    second = registration.register_with_transformers()
    assert first == second
    assert set(SIX_HEADS_AND_BASE) <= set(first)
    assert transformers.AutoModel._model_mapping[ours_hf.MegaConfig] is ours_hf.MegaModel


def test_override_is_announced_once_at_info(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registration._state, "registered", False)
    with caplog.at_level(logging.INFO, logger=registration.__name__):
        registration.register_with_transformers()
        registration.register_with_transformers()
    notes = [r for r in caplog.records if r.name == registration.__name__ and r.levelno == logging.INFO]
    expected = 1 if registration.builtin_mega_exists() else 0
    assert len(notes) == expected, [r.getMessage() for r in notes]
    assert registration.builtin_mega_exists() == transformers.__version__.startswith("4.")


def test_auto_tokenizer_knows_mega() -> None:
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

    tokenizers = TOKENIZER_MAPPING[ours_hf.MegaConfig]
    names = [t.__name__ for t in (tokenizers if isinstance(tokenizers, tuple) else (tokenizers,)) if t is not None]
    assert any(name.startswith("Roberta") for name in names), names



def test_from_transformers_import_returns_ours() -> None:
    """The model document's first line: on 5.x the names do not exist, on 4.57 they are deprecated."""
    from transformers import (  # noqa: F401
        MegaConfig,
        MegaForCausalLM,
        MegaForImageClassification,
        MegaForMaskedLM,
        MegaForMultipleChoice,
        MegaForQuestionAnswering,
        MegaForSequenceClassification,
        MegaForTokenClassification,
        MegaModel,
        MegaPreTrainedModel,
    )

    imported = dict(locals())
    assert set(imported) == set(registration.TOP_LEVEL_NAMES)
    for name, value in imported.items():
        assert value is getattr(ours_hf, name), (name, value)


def test_the_deprecated_reference_package_is_left_alone() -> None:
    reference = pytest.importorskip("transformers.models.deprecated.mega", reason="needs transformers 4.57")
    assert reference.MegaModel.__module__.startswith("transformers.models.deprecated.mega")
    assert reference.MegaModel is not ours_hf.MegaModel


@pytest.mark.parametrize(
    "before",
    [
        pytest.param("", id="mega_plugin-first"),
        pytest.param("import transformers\n", id="transformers-first"),
        # On 4.57 this resolves (and caches) the deprecated class before we register.
        pytest.param("import transformers\ngetattr(transformers, 'MegaModel', None)\n", id="deprecated-name-cached-first"),
    ],
)
@pytest.mark.parametrize(
    "after",
    [
        pytest.param("", id="as-registered"),
        # transformers re-runs its own __init__ here and puts a new lazy module into sys.modules.
        pytest.param("import transformers.processing_utils\n", id="after-transformers-reloads-itself"),
    ],
)
def test_fresh_process_sees_our_names(before: str, after: str) -> None:
    import subprocess
    import sys

    script = (
        before
        + "import mega_plugin\n"
        + after
        + "from transformers import MegaConfig, MegaModel, MegaForCausalLM\n"
        + "print(MegaConfig.__module__, MegaModel.__module__, MegaForCausalLM.__module__)\n"
    )
    env = {**__import__("os").environ, "MEGA_PLUGIN_AUTOREGISTER": "0"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    modules = done.stdout.split()
    assert len(modules) == 3 and all(m.startswith("mega_plugin.adapters.hf.") for m in modules), done.stdout
