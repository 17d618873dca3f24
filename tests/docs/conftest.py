"""Runs every documented ``>>>`` example once per session (``_support.doc_examples``)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def doc_results(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], dict[str, Any]]:
    pytest.importorskip("transformers")
    from _support.doc_examples import run_examples

    return run_examples(tmp_path_factory.mktemp("hf-home"))
