"""Forward and training-step benchmark against transformers' MEGA -- same as ``mega-plugin bench forward``.

Example (fairseq2 environment, where transformers 4.57's deprecated MEGA is importable)::

    python benchmarks/forward.py --lengths 512 2048 8192 --chunks 256 none --output-dir bench-out
"""

from __future__ import annotations

import sys

from mega_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "forward", *sys.argv[1:]]))
