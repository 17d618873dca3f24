"""``MegaClassifierConfig``: the fairseq2 configuration of a MEGA sequence classifier (family ``mega_classifier``).

The LRA classifiers of the original code (and any HF ``MegaForSequenceClassification`` /
``MegaForImageClassification`` directory) in fairseq2, following fairseq2 0.8.1's own classifier
pattern (``jepa_classifier``: an encoder, a pooler, a projection). Every field of
:class:`mega_plugin.core.MegaCoreConfig` is carried under its own name and default (derived, not
restated, so the names match config.json), plus ``num_labels`` and ``classifier_dropout``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Final, Mapping

from ...core.config import MegaCoreConfig

MEGA_CLASSIFIER_FAMILY: Final = "mega_classifier"
"""Name of the fairseq2 model family."""

CLASSIFIER_ARCHITECTURES: Final = ("MegaForSequenceClassification", "MegaForImageClassification")
"""HF architectures whose directories this family loads."""


def _core_field_specs() -> list[tuple[str, Any, dataclasses.Field[Any]]]:
    hints = typing.get_type_hints(MegaCoreConfig)
    return [
        (f.name, hints[f.name], dataclasses.field(default=f.default))
        for f in dataclasses.fields(MegaCoreConfig)
        if f.name != "extra"
    ]


MegaClassifierCoreFields = dataclasses.make_dataclass("MegaClassifierCoreFields", _core_field_specs(), kw_only=True)
MegaClassifierCoreFields.__module__ = __name__
MegaClassifierCoreFields.__doc__ = "Every field of :class:`MegaCoreConfig` (see the core class for each meaning)."


@dataclass(kw_only=True)
class MegaClassifierConfig(MegaClassifierCoreFields):  # type: ignore[misc, valid-type]  # base built from the core
    """A MEGA encoder with a sequence classification head (``classifier_style`` picks which)."""

    num_labels: int = 2
    """Number of logits per sequence."""

    classifier_dropout: float | None = None
    """Dropout inside the head; ``None``: ``hidden_dropout_prob`` (the HF convention)."""

    def to_core(self) -> MegaCoreConfig:
        """The core config (validates every field); ``ValueError`` naming a bad classifier field."""
        if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, int) or self.num_labels <= 0:
            raise ValueError(f"num_labels must be a positive integer, got {self.num_labels!r}")
        names = [f.name for f in dataclasses.fields(MegaClassifierCoreFields)]
        return MegaCoreConfig(**{name: getattr(self, name) for name in names})

    @property
    def head_dropout(self) -> float:
        return self.classifier_dropout if self.classifier_dropout is not None else self.hidden_dropout_prob

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> "MegaClassifierConfig":
        """The config of an HF ``MegaForSequenceClassification`` / ``MegaForImageClassification`` config.json."""
        architectures = list(hf.get("architectures") or [])
        if not set(architectures) & set(CLASSIFIER_ARCHITECTURES):
            raise ValueError(
                f"architectures={architectures!r} is not a MEGA sequence classifier; allowed values: "
                f"{', '.join(CLASSIFIER_ARCHITECTURES)}"
            )
        core = MegaCoreConfig.from_mapping({k: v for k, v in hf.items() if not k.startswith("_")})
        labels = hf.get("id2label")
        num_labels = len(labels) if labels else int(hf.get("num_labels", 2))
        values = {f.name: getattr(core, f.name) for f in dataclasses.fields(MegaClassifierCoreFields)}
        return cls(**values, num_labels=num_labels, classifier_dropout=hf.get("classifier_dropout"))
