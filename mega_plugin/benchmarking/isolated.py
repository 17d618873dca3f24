"""Run each benchmark case in a fresh Python process (clean peak-memory accounting).

``python -m mega_plugin.benchmarking.isolated '<json>'`` measures one case and prints one
JSON line; :func:`run_isolated` is the parent side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

from .measure import Case, Measurement, measure_case

RESULT_PREFIX = "MEGA_BENCH_RESULT "


def available_mib() -> float | None:
    """MemAvailable from /proc/meminfo, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def run_isolated(case: Case, *, repeats: int, threads: int, timeout_s: float) -> Measurement:
    """Measure ``case`` in a child process; failures come back as ``Measurement.error``."""
    payload = json.dumps({"case": asdict(case), "repeats": repeats, "threads": threads})
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__, payload],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=environment,
        )
    except subprocess.TimeoutExpired:
        return Measurement(case=case, error=f"timed out after {timeout_s:.0f} s")
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return Measurement.from_dict(json.loads(line[len(RESULT_PREFIX) :]))
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return Measurement(case=case, error=f"exit {done.returncode}: {tail[:200]}")


def _main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    case = Case(**request["case"])
    try:
        result = measure_case(case, repeats=request["repeats"], threads=request["threads"])
    except Exception as error:  # reported to the parent, which prints it in the table
        result = Measurement(case=case, error=f"{type(error).__name__}: {error}"[:300])
    print(RESULT_PREFIX + json.dumps(result.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
