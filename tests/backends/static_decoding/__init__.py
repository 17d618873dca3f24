"""Tests of static decoding (``mega_plugin.backends.static_decoding``) against the core's whole-sequence forward."""
