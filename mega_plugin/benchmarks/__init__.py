"""Benchmarks behind ``mega-plugin bench`` and ``python -m mega_plugin.benchmarks.<name>``.

Measurements, never tests. Our model is built by :func:`.models.build_ours` and transformers'
deprecated MEGA by :func:`.models.build_reference`, for every benchmark.
"""
