"""Run a worker script under ``python -m torch.distributed.run`` on CPU and report crashes clearly;
compare a rank's parameters with the single-process ones.

Shared by the distributed tests of ``tests/reliability`` and ``tests/fairseq2``. The ranks get
``tests/`` on ``PYTHONPATH``, so worker scripts import ``_support`` as the tests do.

The rendezvous is c10d on ``localhost:0``: the store binds a port the OS picks, so parallel
runs never race for a port (what ``torchrun --standalone`` does, spelled out).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Mapping, Sequence

import torch

DEFAULT_TIMEOUT_S: Final = 180.0
"""Wall-clock limit of one launch (a hung collective must not hang the suite)."""

_TAIL_CHARS: Final = 12000

TESTS_DIR: Final = Path(__file__).resolve().parent.parent
"""``tests/``, the folder that holds ``_support``."""


@dataclass(frozen=True)
class LaunchResult:
    """What a launch printed (the ranks inherit torchrun's stdout and stderr)."""

    returncode: int
    stdout: str
    stderr: str

    def report(self) -> str:
        """The exit status and the ends of both streams, for an assertion message."""
        return (
            f"torchrun exited with {self.returncode}\n"
            f"--- stderr (last {_TAIL_CHARS} chars) ---\n{self.stderr[-_TAIL_CHARS:]}\n"
            f"--- stdout (last {_TAIL_CHARS} chars) ---\n{self.stdout[-_TAIL_CHARS:]}"
        )


def torchrun_command(script: Path, args: Sequence[str], *, nproc_per_node: int, log_dir: Path) -> list[str]:
    """``python -m torch.distributed.run`` for one node of ``nproc_per_node`` CPU workers.

    ``log_dir`` receives torchrun's per-attempt folders (the ranks' error files); without it
    torchrun leaves a ``torchelastic_*`` folder in the system temp directory after every run.
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc_per_node),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "localhost:0",
        "--rdzv-id",
        uuid.uuid4().hex,
        "--max-restarts",
        "0",
        "--log-dir",
        str(log_dir),
        str(script),
        *args,
    ]


def worker_pythonpath(existing: str | None) -> str:
    """``PYTHONPATH`` for a worker: ``tests/`` first (for ``_support``), then what was there."""
    return os.pathsep.join(filter(None, [str(TESTS_DIR), existing]))


def launch(
    script: Path,
    args: Sequence[str],
    *,
    log_dir: Path,
    nproc_per_node: int = 2,
    env: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> LaunchResult:
    """Run ``script`` on ``nproc_per_node`` ranks; kill the whole process group on timeout."""
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # two ranks on a small shared machine
        "CUDA_VISIBLE_DEVICES": "",  # CPU and gloo, even where a GPU is visible
        **(env or {}),
    }
    environment["PYTHONPATH"] = worker_pythonpath(environment.get("PYTHONPATH"))
    process = subprocess.Popen(
        torchrun_command(script, args, nproc_per_node=nproc_per_node, log_dir=log_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,  # own process group: a timeout kills torchrun and its ranks
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        stderr += f"\n[launcher] killed after {timeout_s:.0f} s (timeout)"
        return LaunchResult(returncode=-int(signal.SIGKILL), stdout=stdout, stderr=stderr)
    return LaunchResult(returncode=process.returncode, stdout=stdout, stderr=stderr)


def assert_parameters_close(
    got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor], label: str, *, rtol: float, atol: float
) -> None:
    """Every parameter of ``got`` (a rank's) equals ``want`` (one process's); ``label`` names the run."""
    assert got.keys() == want.keys(), f"{label}: parameter names differ: {sorted(got.keys() ^ want.keys())}"
    for name, expected in want.items():
        torch.testing.assert_close(
            got[name], expected, rtol=rtol, atol=atol, msg=lambda detail, name=name: f"{label}, {name}: {detail}"
        )
