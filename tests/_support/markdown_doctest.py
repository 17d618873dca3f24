"""Run the ``>>>`` examples of a markdown document as doctests, checking structure where needed.

Each fenced code block that contains ``>>>`` is one doctest with fresh globals (a documentation
page's blocks are independent). Outputs are compared exactly; an example marked *weight
dependent* (its printed value depends on the weights, which in tests are tiny and random, not the
real ones) is compared by structure instead (:class:`StructureChecker`): the same Python types,
the same dict keys, the same list lengths, the same tensor shapes and dtypes.

Run as a program in a fresh interpreter (the hub environment variables must be set before
huggingface_hub is imported)::

    python -m _support.markdown_doctest SPEC.json RESULTS.json

SPEC lists ``{"path", "repairs": [[old, new], ...], "weight_dependent": [source fragment, ...]}``;
RESULTS gets one entry per block: ``{"document", "index", "line", "attempted", "failed", "report"}``.
Before the blocks run, the startup hook module is installed (what the ``.pth`` file of an installed
wheel does), so the blocks themselves never name mega_plugin.
"""

from __future__ import annotations

import ast
import doctest
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Sequence

STRUCTURE: Final = doctest.register_optionflag("STRUCTURE")
"""Compare this example's output by structure (types, keys, lengths, tensor shapes), not value."""

FENCE: Final = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
TENSOR: Final = re.compile(r"^tensor\((?P<body>.*?)(?:,\s*dtype=(?P<dtype>torch\.\w+))?(?:,\s*\w+=[^=]*)*\)$", re.DOTALL)
OPTIONS: Final = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclass(frozen=True)
class Block:
    """One fenced block with examples: its text and the line of the document it starts on."""

    text: str
    line: int


def example_blocks(markdown: str) -> list[Block]:
    """The fenced blocks of ``markdown`` that contain ``>>>`` examples, in order."""
    blocks = []
    for match in FENCE.finditer(markdown):
        body = match.group(1)
        if re.search(r"^\s*>>> ", body, re.MULTILINE):
            blocks.append(Block(body, markdown.count("\n", 0, match.start(1)) + 1))
    return blocks


def apply_repairs(markdown: str, repairs: Sequence[tuple[str, str]]) -> str:
    """Replace each ``old`` by ``new``; each must occur exactly once (a stale repair is an error)."""
    for old, new in repairs:
        count = markdown.count(old)
        if count != 1:
            raise ValueError(f"repair {old!r} must match exactly once, matched {count} times")
        markdown = markdown.replace(old, new)
    return markdown


# --------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------


def structure_of(text: str) -> Any:
    """A comparable description of a printed value, or ``None`` when it cannot be parsed."""
    text = text.strip()
    try:
        return _describe(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    match = TENSOR.match(text)
    if match is None:
        return None
    body = match.group("body").replace("nan", "0.0").replace("inf", "0.0")
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError):
        return None
    return ("tensor", _shape(value), _element_kind(value, match.group("dtype")))


def _describe(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(key), _describe(item)) for key, item in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_describe(item) for item in value))
    return type(value).__name__


def _shape(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def _element_kind(value: Any, dtype: str | None) -> str:
    if dtype is not None:
        return dtype
    while isinstance(value, list) and value:
        value = value[0]
    return "float" if isinstance(value, float) else "int" if isinstance(value, int) else "bool"


class StructureChecker(doctest.OutputChecker):
    """Exact (with the usual doctest options); for ``STRUCTURE`` examples, equal structure suffices."""

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        if super().check_output(want, got, optionflags):
            return True
        if not optionflags & STRUCTURE:
            return False
        expected = structure_of(want)
        return expected is not None and expected == structure_of(got)


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def run_block(block: Block, *, name: str, path: str, weight_dependent: Sequence[str]) -> dict[str, Any]:
    """Run one block in fresh globals; returns its counts and the failure report."""
    test = doctest.DocTestParser().get_doctest(block.text, {"__name__": name}, name, path, block.line)
    for example in test.examples:
        if any(fragment in example.source for fragment in weight_dependent):
            example.options[STRUCTURE] = True
    report = io.StringIO()
    runner = doctest.DocTestRunner(checker=StructureChecker(), optionflags=OPTIONS)
    result = runner.run(test, out=report.write, clear_globs=True)
    structural = sum(1 for example in test.examples if example.options.get(STRUCTURE))
    return {"attempted": result.attempted, "failed": result.failed, "structural": structural, "report": report.getvalue()}


def run_document(path: Path, *, repairs: Sequence[tuple[str, str]] = (), weight_dependent: Sequence[str] = ()) -> list[dict[str, Any]]:
    markdown = apply_repairs(path.read_text(encoding="utf-8"), repairs)
    results = []
    for index, block in enumerate(example_blocks(markdown)):
        outcome = run_block(block, name=f"{path.name}[{index}]", path=str(path), weight_dependent=weight_dependent)
        results.append({"document": str(path), "index": index, "line": block.line, **outcome})
    return results


def main(argv: Sequence[str]) -> int:
    spec_path, results_path = map(Path, argv)
    import _mega_plugin_autoregister

    _mega_plugin_autoregister.install()  # what mega_plugin_autoregister.pth does at startup
    results = []
    for document in json.loads(spec_path.read_text()):
        results += run_document(
            Path(document["path"]),
            repairs=[tuple(pair) for pair in document.get("repairs", ())],
            weight_dependent=document.get("weight_dependent", ()),
        )
    results_path.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
