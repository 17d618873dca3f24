"""Build tests/fixtures/original_mega from the ORIGINAL facebookresearch/mega code.

    python scripts/original_mega/build_fixtures.py --original /tmp/mega_original \
        --out tests/fixtures/original_mega

``--original`` is an extracted snapshot of facebookresearch/mega (commit aeaa4b4): its model
and module files are imported from there at generation time, over the small framework
stand-ins of :mod:`standins`; nothing of it is copied into this repository. For each README
setup (:mod:`setups`) one tiny randomised model is built, checkpoints are written in fairseq's
layouts and dtypes (:mod:`checkpoints`), and the original's outputs on fixed inputs are saved
as references (:mod:`references`), with a ``manifest.json`` describing it all.
Run in a fresh interpreter with torch (the project's fairseq2 or hf venv).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ORIGINAL_COMMIT = "aeaa4b4"


def _commit(snapshot: Path, given: str | None) -> str:
    if given:
        return given
    try:
        out = subprocess.run(["git", "-C", str(snapshot), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ORIGINAL_COMMIT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", required=True, type=Path, help="extracted facebookresearch/mega snapshot")
    parser.add_argument("--out", required=True, type=Path, help="fixture directory to (re)write")
    parser.add_argument("--commit", help=f"the snapshot's commit (default: git rev-parse, else {ORIGINAL_COMMIT})")
    parser.add_argument("--only", action="append", default=[], metavar="SETUP", help="build only these setups")
    options = parser.parse_args(argv)

    import standins

    standins.install(options.original)
    import torch

    from build_one import build_setup
    from setups import SETUPS

    torch.set_num_threads(1)
    commit = _commit(options.original, options.commit)
    options.out.mkdir(parents=True, exist_ok=True)
    index = {}
    for setup in SETUPS:
        if options.only and setup.name not in options.only:
            continue
        directory = options.out / setup.name
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        manifest = build_setup(setup, directory, commit=commit)
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        size = sum(f.stat().st_size for f in directory.iterdir())
        index[setup.name] = size
        print(f"{setup.name}: {size / 1024:.1f} KiB, checks {manifest['generator_checks']}")
    print(f"total {sum(index.values()) / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
