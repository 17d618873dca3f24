"""Converters of other projects' checkpoints into mega-plugin's formats: one subpackage per source.

* :mod:`mega_plugin.converters.fairseq_mega`: the original facebookresearch/mega (fairseq)
  checkpoints, into the Hugging Face MEGA layout (:mod:`mega_plugin.formats.hf`).

A converter is a plain function ``convert(state_dict, original_args[, *, allow_drop])``; the
built-in plugin (:mod:`mega_plugin.registry.builtin`) registers these through the
``mega_plugin_register_converters`` hook, so ``mega-plugin convert --from NAME`` finds them.
"""

from __future__ import annotations

from . import fairseq_mega

__all__ = ["fairseq_mega"]
