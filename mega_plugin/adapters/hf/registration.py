"""Register MEGA with transformers' Auto classes and top-level names (4.57.x and 5.x).

On 5.x ``"mega"`` is free. On 4.57.x the deprecated built-in MEGA owns it; we register with
``exist_ok=True`` on *every* Auto mapping that mentions MEGA, because any mapping left alone
would still resolve a config named ``MegaConfig`` to the deprecated model.

``from transformers import MegaConfig, MegaModel, MegaFor...`` (the model document's first line)
must return our classes too: on 5.x the names do not exist (transformers' lazy module raises),
on 4.57 they resolve to the deprecated classes. We bind them as attributes of the ``transformers``
module (and of ``transformers.models.mega`` where a version has that alias); a lazy module only
consults its own table for names missing from its ``__dict__``, so the binding wins. transformers
re-executes its own ``__init__`` now and then (``processing_utils`` imports it directly), which
puts a *new* lazy module into ``sys.modules``; so the lazy module class also answers our names
before its own table, for every instance named ``transformers``.
``transformers.models.deprecated.mega`` is left alone: it is the parity oracle.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from types import ModuleType
from typing import Final

import transformers

from .configuration_mega import MegaConfig
from .modeling_classification import (
    MegaForMultipleChoice,
    MegaForQuestionAnswering,
    MegaForSequenceClassification,
    MegaForTokenClassification,
)
from .modeling_image import MegaForImageClassification
from .modeling_lm import MegaForCausalLM, MegaForMaskedLM
from .modeling_mega import MegaModel, MegaPreTrainedModel
from .name_tables import add_to_name_tables

logger = logging.getLogger(__name__)

# Auto class name -> our class. Names missing on the running version are skipped.
AUTO_CLASSES: Final[dict[str, type[MegaPreTrainedModel]]] = {
    "AutoModel": MegaModel,
    "AutoModelForCausalLM": MegaForCausalLM,
    "AutoModelForMaskedLM": MegaForMaskedLM,
    "AutoModelForPreTraining": MegaForMaskedLM,
    "AutoModelWithLMHead": MegaForMaskedLM,  # 4.57 only
    "AutoModelForSequenceClassification": MegaForSequenceClassification,
    "AutoModelForMultipleChoice": MegaForMultipleChoice,
    "AutoModelForTokenClassification": MegaForTokenClassification,
    "AutoModelForQuestionAnswering": MegaForQuestionAnswering,
    "AutoModelForImageClassification": MegaForImageClassification,
    "AutoModelForTextEncoding": MegaModel,
}

# The names the model document imports from ``transformers`` -> our class.
TOP_LEVEL_NAMES: Final[dict[str, type]] = {
    "MegaConfig": MegaConfig,
    "MegaPreTrainedModel": MegaPreTrainedModel,
    "MegaModel": MegaModel,
    "MegaForCausalLM": MegaForCausalLM,
    "MegaForMaskedLM": MegaForMaskedLM,
    "MegaForSequenceClassification": MegaForSequenceClassification,
    "MegaForMultipleChoice": MegaForMultipleChoice,
    "MegaForTokenClassification": MegaForTokenClassification,
    "MegaForQuestionAnswering": MegaForQuestionAnswering,
    "MegaForImageClassification": MegaForImageClassification,
}

MODEL_ALIAS_MODULE: Final = "transformers.models.mega"
"""Where versions before the deprecation kept MEGA; bound too when it exists."""

_state = {"registered": False}


def builtin_mega_exists() -> bool:
    """Whether this transformers ships its own (deprecated) MEGA, i.e. 4.x."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return "mega" in CONFIG_MAPPING_NAMES


def register_with_transformers() -> list[str]:
    """Register MegaConfig and every head; idempotent. Returns the Auto classes registered."""
    registered = []
    overriding = builtin_mega_exists()
    transformers.AutoConfig.register("mega", MegaConfig, exist_ok=True)
    for auto_name, model_class in AUTO_CLASSES.items():
        auto_class = getattr(transformers, auto_name, None)
        if auto_class is None:
            continue
        auto_class.register(MegaConfig, model_class, exist_ok=True)
        registered.append(auto_name)
    _register_tokenizer()
    add_to_name_tables()
    bind_top_level_names()
    if overriding and not _state["registered"]:
        logger.info(
            "mega-plugin: transformers %s ships a deprecated MEGA; the Auto classes now return "
            "mega_plugin's MEGA classes for model_type 'mega'",
            transformers.__version__,
        )
    _state["registered"] = True
    return registered


def bind_top_level_names() -> list[ModuleType]:
    """Make ``from transformers import MegaModel`` (and every name of :data:`TOP_LEVEL_NAMES`)
    return our classes. Returns the modules the names were bound in."""
    modules: list[ModuleType] = [transformers]
    alias = _model_alias_module()
    if alias is not None:
        modules.append(alias)
    for module in modules:
        for name, ours in TOP_LEVEL_NAMES.items():
            setattr(module, name, ours)
    _answer_our_names_in_new_lazy_modules(type(transformers))
    return modules


def _answer_our_names_in_new_lazy_modules(lazy_class: type) -> None:
    # A later copy of the lazy ``transformers`` module starts with an empty __dict__ and resolves
    # names through its class's __getattr__: answer ours there first. Installed once per class.
    if lazy_class is ModuleType or getattr(lazy_class, "_mega_plugin_names", None) is not None:
        return
    own_getattr = getattr(lazy_class, "__getattr__", None)
    if own_getattr is None:
        return
    bound_in = {"transformers", MODEL_ALIAS_MODULE}

    def __getattr__(self: ModuleType, name: str) -> object:
        if name in TOP_LEVEL_NAMES and self.__name__ in bound_in:
            return TOP_LEVEL_NAMES[name]
        return own_getattr(self, name)

    lazy_class.__getattr__ = __getattr__  # type: ignore[method-assign]
    lazy_class._mega_plugin_names = TOP_LEVEL_NAMES  # type: ignore[attr-defined]


def _model_alias_module() -> ModuleType | None:
    # Only a real ``transformers.models.mega`` (4.x before the deprecation) counts; 4.57 and 5.x
    # have none, and asking must not import anything heavy or raise.
    if MODEL_ALIAS_MODULE in sys.modules:
        return sys.modules[MODEL_ALIAS_MODULE]
    try:
        if importlib.util.find_spec(MODEL_ALIAS_MODULE) is None:
            return None
        return importlib.import_module(MODEL_ALIAS_MODULE)
    except (ImportError, ValueError):
        return None


def _register_tokenizer() -> None:
    # MEGA checkpoints use RoBERTa's BPE tokenizer. 4.57 maps "mega" to it by name already;
    # 5.x keeps the name entry but cannot reach it without the config, so register it.
    if builtin_mega_exists():
        return
    try:
        from transformers import RobertaTokenizer
    except ImportError:  # pragma: no cover - tokenizers backend missing
        return
    try:
        transformers.AutoTokenizer.register(MegaConfig, tokenizer_class=RobertaTokenizer, exist_ok=True)
    except TypeError:
        transformers.AutoTokenizer.register(MegaConfig, RobertaTokenizer, exist_ok=True)
