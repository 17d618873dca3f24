"""Setup for the benchmark tests: torch's thread count is restored after every test.

The benchmark entry points set it (``--threads``); other test folders keep theirs.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(previous)
