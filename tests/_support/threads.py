"""One intra-op thread while a test runs (registered for the whole suite by ``tests/conftest.py``).

The tests push tiny tensors through many small ops; with several OpenMP threads on a busy
2-core machine each op can wait for a scheduler slice (measured: a 2-layer forward took
200+ ms with 2 threads under load, 6 ms with 1). The previous setting is restored after
every test.
"""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
