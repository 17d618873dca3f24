"""Tests of the backend-neutral core (``mega_plugin.core``): torch only, fast.

This folder is a package so its modules are imported as ``core.test_*`` and never collide
with same-named test modules of other folders (e.g. a ``test_config.py`` of the adapters).
"""
