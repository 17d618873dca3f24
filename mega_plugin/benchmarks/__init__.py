"""Benchmarks behind ``mega-plugin bench`` and the ``python -m mega_plugin.benchmarks.<name>`` scripts (measurements, never tests)."""
