"""Threads for one call: no more than the cores that other processes leave free right now.

Why: the CPU schedule runs many short parallel regions (row blocks), each ending in a barrier.
When another process holds one of the cores, a worker thread waits for its time slice at every
barrier, and the whole call waits with it: measured here with 2 threads, a 2048-token forward
took 5-9x longer than the same call on 1 thread while one or two busy processes ran. One thread
on the free core loses nothing to barriers. So, before a long call, we count the runnable tasks
of the machine that are not ours (``/proc/loadavg``'s running count minus our own running
threads) and use at most the cores left.

Where the count does not describe our cores (this process may use only some of the machine's
CPUs, as in most containers, or ``/proc`` is missing), nothing changes.
``MEGA_PLUGIN_ADAPTIVE_THREADS=0`` turns the adjustment off.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final, Iterator

import torch

ENV_ADAPTIVE_THREADS: Final = "MEGA_PLUGIN_ADAPTIVE_THREADS"
MIN_TOKENS: Final = 2048
"""Calls over fewer tokens (decoding steps, short inputs) are left alone: reading /proc costs ~30 us."""


def _running_elsewhere(proc: Path) -> int | None:
    """Runnable tasks of the machine outside this process, or None where /proc does not tell."""
    try:
        running = int((proc / "loadavg").read_text().split()[3].split("/")[0])
        ours = 0
        for task in (proc / "self" / "task").iterdir():
            # "pid (comm) state ...": comm may hold spaces, the state follows the last ')'
            if (task / "stat").read_text().rpartition(")")[2].split()[0] == "R":
                ours += 1
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - ours)


def threads_for_call(configured: int, *, proc: Path = Path("/proc")) -> int:
    """At most ``configured`` threads, and at most the cores not taken by other runnable tasks (>= 1)."""
    if os.environ.get(ENV_ADAPTIVE_THREADS, "1").strip() == "0" or configured <= 1:
        return configured
    cpus = os.cpu_count()
    if cpus is None or len(os.sched_getaffinity(0)) != cpus:
        return configured  # the machine-wide count says nothing about the cores we may use
    elsewhere = _running_elsewhere(proc)
    if elsewhere is None:
        return configured
    return max(1, min(configured, cpus - elsewhere))


@contextlib.contextmanager
def fitted_threads(tokens: int) -> Iterator[int]:
    """Run the block with :func:`threads_for_call` threads when it covers ``tokens`` >= :data:`MIN_TOKENS`."""
    configured = torch.get_num_threads()
    threads = threads_for_call(configured) if tokens >= MIN_TOKENS else configured
    if threads == configured:
        yield configured
        return
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(configured)
