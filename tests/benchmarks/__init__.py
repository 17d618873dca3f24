"""Tests of the benchmarks package (``mega_plugin.benchmarks``): tables, entry points, model builders.

This folder is a package so its modules are imported as ``benchmarks.test_*`` and never
collide with same-named test modules of other folders.
"""
