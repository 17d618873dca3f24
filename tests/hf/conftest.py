"""Setup for the Hugging Face adapter tests.

Registers ``tests/hf/helpers.py`` as the module ``mega_hf_helpers`` and
``tests/hf/reference_checkpoints.py`` as ``mega_hf_reference_checkpoints``, so that test modules
import them by names no other test folder uses (folders here have no ``__init__.py``).
Shared helpers and the one-thread fixture come from ``tests/_support``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _register(module_name: str, file_name: str) -> None:
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, Path(__file__).with_name(file_name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)


_register("mega_hf_helpers", "helpers.py")
_register("mega_hf_reference_checkpoints", "reference_checkpoints.py")


# Markers that transformers' own test mixins (tests/hf/test_transformers_mixins.py) put on
# their tests; registered so that --strict-markers accepts them.
TRANSFORMERS_MIXIN_MARKERS = (
    "accelerate_tests",
    "flash_attn_test",
    "flash_attn_3_test",
    "flash_attn_4_test",
    "order",  # 4.57
    "torch_compile_test",
    "torch_export_test",
)


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    for marker in TRANSFORMERS_MIXIN_MARKERS:
        config.addinivalue_line("markers", f"{marker}: a marker of transformers' common test mixins")
