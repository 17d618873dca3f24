"""Interpreter start with and without the startup hook (``mega_plugin_autoregister.pth``).

``mega-plugin bench startup`` or ``python -m mega_plugin.benchmarks.startup [--runs N]``: starts a
fresh interpreter N times per variant, interleaved (hook, no hook, hook, ...), and reports medians
side by side, plus the hook module's own import time from ``-X importtime`` (the precise number:
wall time of a whole interpreter start varies by milliseconds on a shared machine).

Where the ``.pth`` file is installed (a wheel install), "no hook" runs with a folder first on
``PYTHONPATH`` that holds an empty module of the hook's name, so the ``.pth`` line imports nothing;
where it is not (a source checkout), "hook" imports the module the ``.pth`` line would.
``--with-transformers`` adds ``import transformers`` (registration included) with and without the
hook. Timing only: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import site
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Sequence

HOOK_MODULE: Final = "_mega_plugin_autoregister"
PTH_NAME: Final = "mega_plugin_autoregister.pth"
ENV_SWITCH: Final = "MEGA_PLUGIN_AUTOREGISTER"


@dataclass(frozen=True)
class Variant:
    """One way of starting the interpreter: the ``-c`` code and extra environment."""

    name: str
    code: str
    env: dict[str, str]


@dataclass(frozen=True)
class Timing:
    """Wall-clock milliseconds of one variant over the runs."""

    name: str
    median_ms: float
    min_ms: float
    max_ms: float
    runs: int


def site_dirs() -> list[Path]:
    dirs = [Path(path) for path in site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        dirs.append(Path(site.getusersitepackages()))
    return dirs


def installed_pth() -> Path | None:
    """The installed ``.pth`` file of the hook, or None (source checkout, editable without it)."""
    for directory in site_dirs():
        if (directory / PTH_NAME).is_file():
            return directory / PTH_NAME
    return None


def hook_dir() -> Path | None:
    """The folder holding the hook module (site-packages, or the checkout root)."""
    spec = importlib.util.find_spec(HOOK_MODULE)
    if spec is not None and spec.origin:
        return Path(spec.origin).parent
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / f"{HOOK_MODULE}.py").is_file() else None


def bytecode_note() -> str:
    """Whether the hook module's bytecode is cached (pip compiles it at install; without it every
    start compiles the source, which costs a few ms more)."""
    directory = hook_dir()
    if directory is None:
        return "hook module not found"
    cached = Path(importlib.util.cache_from_source(str(directory / f"{HOOK_MODULE}.py")))
    return "bytecode cached" if cached.is_file() else f"no bytecode cache ({cached.name} absent: the source is compiled at each start)"


def variants(stub_dir: Path, *, with_transformers: bool) -> tuple[list[tuple[Variant, Variant]], str]:
    """(without hook, with hook) pairs and a sentence saying how the hook was switched."""
    base = {key: value for key, value in os.environ.items() if key != ENV_SWITCH}
    bodies = [("start", "pass")] + ([("import transformers", "import transformers")] if with_transformers else [])
    pairs = []
    if installed_pth() is not None:
        off = {**base, "PYTHONPATH": os.pathsep.join(filter(None, [str(stub_dir), base.get("PYTHONPATH", "")]))}
        for name, body in bodies:
            pairs.append((Variant(f"{name}, no hook", body, off), Variant(f"{name}, hook", body, base)))
        how = f"hook installed ({installed_pth()}); 'no hook' shadows the module with an empty one"
        return pairs, how
    directory = hook_dir()
    if directory is None:
        raise SystemExit(f"no {HOOK_MODULE} module found: install mega-plugin or run from a checkout")
    on = {**base, "PYTHONPATH": os.pathsep.join(filter(None, [str(directory), base.get("PYTHONPATH", "")]))}
    for name, body in bodies:
        pairs.append((Variant(f"{name}, no hook", body, on), Variant(f"{name}, hook", f"import {HOOK_MODULE}; {body}", on)))
    return pairs, f"hook not installed as a .pth file; 'hook' imports {HOOK_MODULE} from {directory}"


def time_start(variant: Variant, *, python: str) -> float:
    """Milliseconds of one interpreter start running the variant's code."""
    start = time.perf_counter()
    subprocess.run([python, "-c", variant.code], env=variant.env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1e3


def hook_import_us(*, python: str, env: dict[str, str], runs: int, code: str) -> float | None:
    """Median cumulative microseconds of the hook module's import, from ``-X importtime``."""
    pattern = re.compile(r"import time:\s+\d+\s+\|\s+(\d+)\s+\|\s+" + HOOK_MODULE + r"\s*$", re.MULTILINE)
    found = []
    for _ in range(runs):
        done = subprocess.run([python, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True, check=True)
        match = pattern.search(done.stderr)
        if match:
            found.append(float(match.group(1)))
    return statistics.median(found) if found else None


def summarise(name: str, samples: Sequence[float]) -> Timing:
    return Timing(name, statistics.median(samples), min(samples), max(samples), len(samples))


def run_startup_benchmark(*, runs: int = 30, with_transformers: bool = False, python: str = sys.executable) -> str:
    """Measure and return a markdown section."""
    if runs < 1:
        raise SystemExit(f"--runs must be at least 1, got {runs}")
    with tempfile.TemporaryDirectory() as stub:
        stub_dir = Path(stub)
        (stub_dir / f"{HOOK_MODULE}.py").write_text("")
        pairs, how = variants(stub_dir, with_transformers=with_transformers)
        rows = []
        for without, with_hook in pairs:
            samples: dict[str, list[float]] = {without.name: [], with_hook.name: []}
            time_start(without, python=python)  # warm the file cache once per variant
            time_start(with_hook, python=python)
            for index in range(runs):
                order = (without, with_hook) if index % 2 == 0 else (with_hook, without)
                for variant in order:
                    samples[variant.name].append(time_start(variant, python=python))
            rows.append((summarise(without.name, samples[without.name]), summarise(with_hook.name, samples[with_hook.name])))
        first_hook = pairs[0][1]
        importtime = hook_import_us(python=python, env=first_hook.env, runs=max(5, runs // 3), code=first_hook.code)
    lines = [
        f"## Interpreter start with and without the startup hook ({runs} runs each, interleaved, medians)",
        "",
        f"Python {sys.version.split()[0]} ({python}); {how}.",
        "",
        "| what | without hook (ms) | with hook (ms) | difference (ms) | min without / with (ms) |",
        "|---|---|---|---|---|",
    ]
    for without, with_hook in rows:
        name = without.name.rsplit(",", 1)[0]
        lines.append(
            f"| `python -c` {name} | {without.median_ms:.1f} | {with_hook.median_ms:.1f} | "
            f"{with_hook.median_ms - without.median_ms:+.1f} | {without.min_ms:.1f} / {with_hook.min_ms:.1f} |"
        )
    shown = "n/a" if importtime is None else f"{importtime / 1e3:.3f} ms ({importtime:.0f} us)"
    lines += ["", f"The hook module's own import (`-X importtime`, cumulative, median): {shown}; {bytecode_note()}."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="interpreter starts per variant")
    parser.add_argument("--with-transformers", action="store_true", help="also time `import transformers`")
    args = parser.parse_args(argv)
    print(run_startup_benchmark(runs=args.runs, with_transformers=args.with_transformers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
