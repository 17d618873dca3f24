"""Training-step benchmark (forward + backward) against transformers' MEGA.

The same as ``mega-plugin bench train`` (the suite itself is :func:`.forward.run_suite`)::

    python -m mega_plugin.benchmarks.train --train-lengths 4096 --chunks 256
"""

from __future__ import annotations

import sys
from typing import Sequence

from .suite_command import run_bench_suite


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench_suite("train", argv)


if __name__ == "__main__":
    sys.exit(main())
