"""Setup for the core tests: one intra-op thread while a core test runs.

The core tests push tiny tensors through many small ops; with several OpenMP threads on a
busy machine each op can wait for a scheduler slice (measured: a 2-layer forward took
200+ ms with 2 threads under load, 6 ms with 1). The previous setting is restored after
every test, so other test folders keep theirs.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
