"""Version-neutral construction of HF output objects.

transformers 5.x names the cache field ``cache``; 4.57 names it ``past_key_values``. Models
build outputs through :func:`make_output` and never spell either name.
"""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

from transformers.utils import ModelOutput

OutputT = TypeVar("OutputT", bound=ModelOutput)


def _field_names(output_class: type[ModelOutput]) -> Mapping[str, Any]:
    # the class's own field table: asked on every forward and decoding step, and readable by
    # dynamo (a torch.compile'd forward), where dataclasses.fields() of a class breaks the graph
    return output_class.__dataclass_fields__


def cache_field(output_class: type[ModelOutput]) -> str | None:
    """The name of ``output_class``'s cache field on this transformers version (None if it has none)."""
    names = _field_names(output_class)
    for candidate in ("cache", "past_key_values"):
        if candidate in names:
            return candidate
    return None


def has_field(output_class: type[ModelOutput], name: str) -> bool:
    """True if ``output_class`` declares the field ``name`` (e.g. ``cross_attentions``)."""
    return name in _field_names(output_class)


def make_output(output_class: type[OutputT], *, cache: Any = None, **fields: Any) -> OutputT:
    """Build ``output_class(**fields)`` with ``cache`` stored under this version's field name."""
    name = cache_field(output_class)
    if name is not None:
        fields[name] = cache
    return output_class(**fields)


def finish(output: ModelOutput, return_dict: bool) -> ModelOutput | tuple[Any, ...]:
    """The output object, or its tuple without ``None`` entries when ``return_dict=False``."""
    return output if return_dict else output.to_tuple()
