"""Tests of the fast paths (``mega_plugin.backends``), each against the core's reference path.

Folders here are packages so their modules are imported as ``backends.<backend>.test_*`` and
never collide with same-named test modules elsewhere.
"""
