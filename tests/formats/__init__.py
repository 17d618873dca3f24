"""Tests of the on-disk formats (``mega_plugin.formats``).

This folder is a package so its modules are imported as ``formats.*`` and never collide with
same-named test modules of other folders.
"""
