"""The ``mega-plugin`` command: a thin dispatcher over ``mega_plugin.commands.<name>`` modules.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
it imports its heavy dependencies inside ``run`` so ``mega-plugin --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Final, Sequence

COMMAND_MODULES: Final = ("demo", "info", "convert", "bench", "fairseq2_card", "export_hf")


def _available_commands() -> list[object]:
    modules = []
    for name in COMMAND_MODULES:
        try:
            modules.append(importlib.import_module(f"mega_plugin.commands.{name}"))
        except ModuleNotFoundError as error:
            if error.name != f"mega_plugin.commands.{name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mega-plugin", description="MEGA for Hugging Face transformers and fairseq2."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _available_commands():
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
