"""Busy background processes, to measure how both implementations behave under contention.

Users run models beside data loaders, tokenizers and other jobs. A fast path whose threads
spin at barriers can lose to a slower one once a core is taken, so the benchmarks can run
with N processes that each keep one core busy (a pure-Python loop: no memory traffic, no
threads of its own) for the whole measurement.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from typing import Iterator

_SPIN = "while True:\n    pass\n"


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[list[subprocess.Popen]]:
    """Run ``count`` spinning processes while the block runs; they are killed on exit."""
    if count < 0:
        raise ValueError(f"background_load={count}; allowed values: 0 or more busy processes")
    spinners = [
        subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield spinners
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()
