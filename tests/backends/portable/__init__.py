"""Tests of the portable kernels (``mega_plugin.backends.portable``): outputs and gradients against
the reference kernels, the calls each declines, and what ``auto`` picks."""
