"""The entry point behind ``python -m mega_plugin.benchmarks.{forward,train,decode}``.

Those modules run the same suites as ``mega-plugin bench``, through the command itself, so
the options and the printed tables are the same either way.
"""

from __future__ import annotations

import sys
from typing import Sequence


def run_bench_suite(suite: str, argv: Sequence[str] | None = None) -> int:
    """``mega-plugin bench <suite> <argv>``; ``argv`` defaults to this process's arguments."""
    from ..cli import main as cli_main  # here, not at the top: the CLI imports these modules too

    arguments = sys.argv[1:] if argv is None else list(argv)
    return cli_main(["bench", suite, *arguments])
