"""Ecosystem adapters over :mod:`mega_plugin.core`: ``hf`` (transformers) and ``fairseq2``."""
