"""fairseq2 adapter: the ``mega`` model family (``MegaCausalLM``) for fairseq2 0.8.

Registered through the ``fairseq2.extension`` entry point (:func:`extension.setup_mega_extension`).
Importing this package does not import fairseq2; import the submodules for the model classes.
"""

from __future__ import annotations

__all__: list[str] = []
