"""The documents whose ``>>>`` examples the tests run, and how each is run.

- the seed: the transformers model page of MEGA (``tests/fixtures/docs/mega_model_doc.md``, a
  copy of ``../shared/seed/mega_model_doc.md``), with the repairs of its rendering;
- the shipped documents: ``docs/*.md`` and ``README.md`` (those with ``>>>`` blocks).

:func:`run_examples` runs them all in one fresh interpreter that reads hub ids from a tiny local
hub cache (``_support.hub_cache``, ``HF_HUB_OFFLINE=1``), has this checkout's ``mega_plugin`` and
startup hook on its path and installs the hook before the examples run: the examples never name
mega_plugin. Returns ``{(document file name, block index): result}`` (``_support.markdown_doctest``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from _support.markdown_doctest import example_blocks

ROOT: Final = Path(__file__).resolve().parents[2]
SEED_FIXTURE: Final = ROOT / "tests" / "fixtures" / "docs" / "mega_model_doc.md"
SHARED_SEED: Final = ROOT.parent / "shared" / "seed" / "mega_model_doc.md"

# The rendering of the seed document dropped text in angle brackets (notes/transformers.md): the
# masked-LM example lost its "<mask>". Each repair must match exactly once.
SEED_REPAIRS: Final = (('"The capital of France is ."', '"The capital of France is <mask>."'),)

# Printed values that depend on the real weights: compared by structure (type), not value.
SEED_WEIGHT_DEPENDENT: Final = ("tokenizer.decode(predicted_token_id)", "round(outputs.loss.item(), 2)")

SHIPPED_DOCS: Final = tuple(sorted((ROOT / "docs").glob("*.md"))) + (ROOT / "README.md",)
SHIPPED_WEIGHT_DEPENDENT: Final = ("generator(", "tokenizer.decode(")


def shipped_documents_with_examples() -> list[Path]:
    return [path for path in SHIPPED_DOCS if example_blocks(path.read_text(encoding="utf-8"))]


def documents() -> list[dict[str, Any]]:
    seed = {"path": str(SEED_FIXTURE), "repairs": SEED_REPAIRS, "weight_dependent": SEED_WEIGHT_DEPENDENT}
    shipped = [{"path": str(path), "weight_dependent": SHIPPED_WEIGHT_DEPENDENT} for path in shipped_documents_with_examples()]
    return [seed, *shipped]


def run_examples(home: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Build the hub cache under ``home`` and run every document's blocks in a fresh interpreter."""
    from _support.hub_cache import build_hub_cache, offline_environment

    build_hub_cache(home / "hub")
    spec = home / "spec.json"
    spec.write_text(json.dumps(documents()))
    results = home / "results.json"
    env = offline_environment(home)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env.pop("MEGA_PLUGIN_AUTOREGISTER", None)
    done = subprocess.run(
        [sys.executable, "-m", "_support.markdown_doctest", str(spec), str(results)],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"doctest runner failed:\n{done.stdout}\n{done.stderr}")
    return {(Path(entry["document"]).name, entry["index"]): entry for entry in json.loads(results.read_text())}
