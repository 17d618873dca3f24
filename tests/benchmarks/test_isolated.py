"""A benchmark case's child process that dies is described by how it died."""

from __future__ import annotations

import signal

from mega_plugin.benchmarks.isolated import _describe_exit


def test_killed_child_is_described_by_its_signal() -> None:
    assert _describe_exit(-int(signal.SIGKILL)).startswith("killed by SIGKILL")
    assert _describe_exit(3) == "exit 3"
