"""Run each benchmark case in a fresh Python process (clean peak-memory accounting).

``python -m mega_plugin.benchmarks.isolated '<json>'`` measures one case and prints one
JSON line; :func:`run_isolated` is the parent side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

from .measure import Case, Measurement, measure_case

RESULT_PREFIX = "MEGA_BENCH_RESULT "


def _proc_mib(path: str, key: str) -> float | None:
    """The ``key:`` line of a /proc file, in MiB (the kernel writes kB), or None if unreadable."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def available_mib() -> float | None:
    """MemAvailable from /proc/meminfo, or None where it cannot be read."""
    return _proc_mib("/proc/meminfo", "MemAvailable")


def _high_water_mib(pid: int) -> float | None:
    """The peak resident set (VmHWM) of a running process, or None once it is gone."""
    return _proc_mib(f"/proc/{pid}/status", "VmHWM")


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        why = " (the kernel's out-of-memory killer sends it)" if number == signal.SIGKILL else ""
        return f"killed by {name}{why}"
    return f"exit {returncode}"


def run_isolated(case: Case, *, repeats: int, threads: int, timeout_s: float) -> Measurement:
    """Measure ``case`` in a child process; failures come back as ``Measurement.error``.

    The parent samples the child's peak resident set while it runs, so a child killed for
    memory still reports how far it got.
    """
    payload = json.dumps({"case": asdict(case), "repeats": repeats, "threads": threads})
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", __name__, payload], stdout=stdout, stderr=stderr, text=True, env=environment
        )
        deadline = time.monotonic() + timeout_s
        high_water = 0.0
        while child.poll() is None:
            high_water = max(high_water, _high_water_mib(child.pid) or 0.0)
            if time.monotonic() > deadline:
                child.kill()
                child.wait()
                return Measurement(case=case, error=f"timed out after {timeout_s:.0f} s (peak RSS {high_water:.0f} MiB)")
            time.sleep(0.2)
        stdout.seek(0)
        stderr.seek(0)
        out_text, err_text = stdout.read(), stderr.read()
    for line in out_text.splitlines():
        if line.startswith(RESULT_PREFIX):
            return Measurement.from_dict(json.loads(line[len(RESULT_PREFIX) :]))
    tail = (err_text.strip().splitlines() or ["no output"])[-1]
    return Measurement(
        case=case,
        error=f"{_describe_exit(child.returncode)} after reaching {high_water:.0f} MiB RSS: {tail[:160]}",
    )


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
