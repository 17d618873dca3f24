"""Setup for the reliability tests (``tests/reliability``).

- Registers ``reliability_helpers.py`` as the module ``mega_reliability_helpers`` (folders here
  have no ``__init__.py``, so helper modules need names no other test folder uses).
- Runs every test with one intra-op thread: the models are tiny and CI has two shared cores.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Iterator

import pytest

if "mega_reliability_helpers" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "mega_reliability_helpers", Path(__file__).with_name("reliability_helpers.py")
    )
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["mega_reliability_helpers"] = _module
    _spec.loader.exec_module(_module)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
