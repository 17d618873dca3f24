"""Shared support of the mega-plugin test suite: one package, imported the same way everywhere.

``pyproject.toml`` puts ``tests/`` on ``sys.path`` (pytest's ``pythonpath``), so every test
module, conftest and worker script imports these modules by their full names, e.g.
``from _support.configs import tiny_config``. Worker scripts started by
:mod:`_support.torchrun` get the same path through ``PYTHONPATH``.

* :mod:`_support.environment`: which ecosystems are installed; ``requires_*`` skip markers.
* :mod:`_support.threads`: the one-intra-op-thread fixture (autouse, registered by ``tests/conftest.py``).
* :mod:`_support.configs`: the tiny model sizes and configs every folder builds on.
* :mod:`_support.calls`: typed kernel calls with defaults; a spy on the kernel choice.
* :mod:`_support.numerics`: float64 ground truth and gradients of a fixed upstream.
* :mod:`_support.ema`: the EMA of the notes in float64 (kernel, double sums, recurrence).
* :mod:`_support.attention`: attention-kernel inputs, options and the shared parity cases.
* :mod:`_support.backends`: models on ``cpu_fast``, their reference twins, row blocks, the
  in-place hand-over log, the oneDNN skip marker.
* :mod:`_support.plugins`: in-process fake plugins (entry points, plugin objects).
* :mod:`_support.torchrun`: ``torch.distributed.run`` launches for the distributed tests.

Nothing here imports transformers or fairseq2 at module level.
"""
