"""Benchmarks behind ``mega-plugin bench`` and ``benchmarks/*.py`` (measurements, never tests)."""
