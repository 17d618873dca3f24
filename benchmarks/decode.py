"""Decoding benchmark (ms per new token, state bytes) -- same as ``mega-plugin bench decode``."""

from __future__ import annotations

import sys

from mega_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "decode", *sys.argv[1:]]))
