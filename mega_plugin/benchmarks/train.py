"""Training-step benchmark (forward + backward) -- same as ``mega-plugin bench train``."""

from __future__ import annotations

import sys

from mega_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "train", *sys.argv[1:]]))
