"""Threads for one call: no more than the cores that other processes leave free right now.

Why: the CPU schedule runs many short parallel regions (row blocks), each ending in a barrier.
When another process holds one of the cores, a worker thread waits for its time slice at every
barrier, and the whole call waits with it: measured here with 2 threads, a 2048-token forward
took 5-9x longer than the same call on 1 thread while one or two busy processes ran. One thread
on the free core loses nothing to barriers. So, before a long call, we count the runnable tasks
of the machine that are not ours (``/proc/loadavg``'s running count minus our own running
threads) and use at most the cores left.

Short calls need it as much: a decoding step is ~900 tiny ops, and after every parallel region
(a GEMV, a concatenation) the idle worker keeps spinning for its time slice; on a busy machine it
takes the core the calling thread needs next. Measured here through HF ``generate()`` at batch 1
with the helpers' test runs beside it: 83-115 tokens/s on 2 threads, 247-422 with the whole model
call fitted, 128-150 with only the layer stack fitted (the LM head and the generate loop still
woke the worker). So :func:`attach_model_fit` fits every call of a whole model, and the reading of
``/proc`` (~30 us) is reused for :data:`READING_TTL_S`, which keeps it off a decoding step's cost.

Where the count does not describe our cores (this process may use only some of the machine's
CPUs, as in most containers, or ``/proc`` is missing), nothing changes.
``MEGA_PLUGIN_ADAPTIVE_THREADS=0`` turns the adjustment off.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Final, Iterator

import torch
from torch import nn

from ...core.tracing import capturing_graph

ENV_ADAPTIVE_THREADS: Final = "MEGA_PLUGIN_ADAPTIVE_THREADS"
MIN_TOKENS: Final = 2048
"""The stack alone fits calls of at least this many tokens (a whole model's call is fitted by
:func:`attach_model_fit`, with the reading reused)."""
READING_TTL_S: Final = 0.05
"""How long a reading of the machine's default ``/proc`` is reused: load moves over seconds, a
decoding step takes milliseconds."""
_DEFAULT_PROC: Final = Path("/proc")
_last_reading: tuple[float, int | None] = (float("-inf"), None)


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


def _free_cores(proc: Path) -> int | None:
    """Cores of the machine not taken by other runnable tasks, or None where the count does not
    describe our cores (this process may use only some of the machine's CPUs) or /proc does not tell."""
    cpus = os.cpu_count()
    if cpus is None or len(os.sched_getaffinity(0)) != cpus:
        return None
    elsewhere = _running_elsewhere(proc)
    return None if elsewhere is None else cpus - elsewhere


def _free_cores_now(proc: Path) -> int | None:
    """:func:`_free_cores`, reused for :data:`READING_TTL_S` when ``proc`` is the real one (the CPU
    count is read with it: ``os.cpu_count()`` alone costs ~6 us, a decoding step asks twice)."""
    global _last_reading
    if proc is not _DEFAULT_PROC and proc != _DEFAULT_PROC:
        return _free_cores(proc)
    now = time.monotonic()
    taken_at, value = _last_reading
    if now - taken_at > READING_TTL_S:
        value = _free_cores(proc)
        _last_reading = (now, value)
    return value


def threads_for_call(configured: int, *, proc: Path = _DEFAULT_PROC) -> int:
    """At most ``configured`` threads, and at most the cores not taken by other runnable tasks (>= 1)."""
    if configured <= 1 or os.environ.get(ENV_ADAPTIVE_THREADS, "1").strip() == "0":
        return configured
    free = _free_cores_now(proc)
    return configured if free is None else max(1, min(configured, free))


@contextlib.contextmanager
def fitted_threads(tokens: int | None = None) -> Iterator[int]:
    """Run the block with :func:`threads_for_call` threads when it covers ``tokens`` >= :data:`MIN_TOKENS`,
    or always with ``tokens=None`` (a whole model step, however few its tokens)."""
    configured = torch.get_num_threads()
    threads = threads_for_call(configured) if tokens is None or tokens >= MIN_TOKENS else configured
    if threads == configured:
        yield configured
        return
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(configured)


# The counts model calls replaced, innermost last, per Python thread (hooks nest: an HF head
# calls its inner MegaModel, both fitted): (id of the module, the count to restore or None).
_replaced = threading.local()


def _fit_before_call(module: nn.Module, args: Any) -> None:
    # compile, export, jit, fx: first and alone, so a traced hook touches nothing (no graph break)
    if capturing_graph():
        return
    configured = torch.get_num_threads()
    threads = threads_for_call(configured)
    if threads != configured:
        torch.set_num_threads(threads)
    calls: list[tuple[int, int | None]] = _replaced.__dict__.setdefault("calls", [])
    calls.append((id(module), configured if threads != configured else None))


def _restore_after_call(module: nn.Module, args: Any, output: Any) -> None:
    if capturing_graph():
        return
    calls: list[tuple[int, int | None]] | None = getattr(_replaced, "calls", None)
    if calls and calls[-1][0] == id(module):
        configured = calls.pop()[1]
        if configured is not None:
            torch.set_num_threads(configured)


def attach_model_fit(model: nn.Module) -> bool:
    """Fit the thread count to the free cores around every call of ``model`` (forward hooks; the
    restore runs even when the call raises). Returns whether it was attached now (not before)."""
    if _fit_before_call in model._forward_pre_hooks.values():
        return False
    model.register_forward_pre_hook(_fit_before_call)
    model.register_forward_hook(_restore_after_call, always_call=True)
    return True


def detach_model_fit(model: nn.Module) -> bool:
    """Undo :func:`attach_model_fit`; returns whether it was attached."""
    found = False
    for hooks in (model._forward_pre_hooks, model._forward_hooks):
        for key, hook in list(hooks.items()):
            if hook in (_fit_before_call, _restore_after_call):
                del hooks[key]
                model._forward_hooks_always_called.pop(key, None)
                found = True
    return found
