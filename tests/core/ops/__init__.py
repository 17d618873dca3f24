"""Tests of the kernel ops of the core (``mega_plugin.core.ops``): the reference kernels, the typed
calls and the registry that chooses a kernel once per distinct call."""
