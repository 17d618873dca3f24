"""The built-in ``fairseq-mega`` converter: facebookresearch/mega checkpoints -> the HF MEGA layout.

Language models (``decoder.`` prefix) and encoders (``encoder.`` or the LRA ``encoder.encoder.``)
are both handled. Nothing is dropped silently: what the HF layout cannot hold raises
:class:`~mega_plugin.registry.ConversionError` unless the caller allows it (``allow_drop``).

* :mod:`.keys`: the source key names and their HF names (or why they have none);
* :mod:`.config`: the architecture (:class:`~mega_plugin.core.MegaCoreConfig`) from the tensors and args;
* :mod:`.convert`: :func:`convert_fairseq_mega`, which puts the two together.
"""

from __future__ import annotations

from .convert import NAME, convert_fairseq_mega

__all__ = ["NAME", "convert_fairseq_mega"]
