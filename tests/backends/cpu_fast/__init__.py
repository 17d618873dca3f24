"""Tests of the ``cpu_fast`` backend (``mega_plugin.backends.cpu_fast``): oneDNN GEMMs, row-blocked
layers and the in-place hand-over between the layers of one stack call, each against the reference path."""
