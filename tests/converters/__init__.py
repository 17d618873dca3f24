"""Tests of the checkpoint converters (``mega_plugin.converters``).

This folder is a package so its modules are imported as ``converters.*`` and never collide
with same-named modules of other folders; ``converters.fairseq_mega_checkpoints`` is shared
with the ``mega-plugin convert`` tests in ``tests/registry``.
"""
