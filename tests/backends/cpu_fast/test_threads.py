"""The stack of ``cpu_fast`` runs a long call on no more threads than the cores other processes leave free.

The machine's state is a fake ``/proc`` (``loadavg`` and this process's task states) and a fake
CPU count, so every case is exact; the speed effect is measured by the benchmarks
(``mega-plugin bench forward --background-load N``), never here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

from _support.backends import accelerated, reference_copy
from _support.configs import tiny_config
from mega_plugin.backends.cpu_fast import threads
from mega_plugin.backends.cpu_fast.ownership import HandOverStack
from mega_plugin.core import MegaBackbone


def fake_proc(root: Path, *, running: int, our_states: str) -> Path:
    """A /proc with ``running`` runnable tasks machine-wide and our threads in ``our_states`` (e.g. "RS")."""
    (root / "loadavg").write_text(f"1.00 0.50 0.25 {running}/120 4242\n")
    for index, state in enumerate(our_states):
        task = root / "self" / "task" / str(100 + index)
        task.mkdir(parents=True)
        task.joinpath("stat").write_text(f"{100 + index} (python (worker) 1) {state} 1 2 3 4\n")
    return root


@pytest.fixture
def two_threads() -> Iterator[None]:
    """torch on 2 threads for the test, the earlier count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv(threads.ENV_ADAPTIVE_THREADS, raising=False)


@pytest.mark.parametrize(
    ("running", "our_states", "expected"),
    [
        (1, "R", 2),  # quiet: only our calling thread runs
        (2, "RR", 2),  # our own spinning worker is not a competitor
        (2, "RS", 1),  # one task elsewhere: one core left
        (4, "RS", 1),  # more competitors than cores: still one thread
        (3, "RRS", 1),
    ],
)
def test_threads_left_by_other_runnable_tasks(
    tmp_path: Path, two_cpus: None, running: int, our_states: str, expected: int
) -> None:
    proc = fake_proc(tmp_path, running=running, our_states=our_states)
    assert threads.threads_for_call(2, proc=proc) == expected


def test_nothing_changes_where_the_count_does_not_describe_our_cores(
    tmp_path: Path, two_cpus: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = fake_proc(tmp_path, running=9, our_states="R")
    assert threads.threads_for_call(1, proc=busy) == 1  # one thread asked: nothing to give back
    assert threads.threads_for_call(2, proc=tmp_path / "missing") == 2  # no /proc
    monkeypatch.setenv(threads.ENV_ADAPTIVE_THREADS, "0")
    assert threads.threads_for_call(2, proc=busy) == 2  # switched off
    monkeypatch.delenv(threads.ENV_ADAPTIVE_THREADS)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0})  # a container's share of a larger machine
    assert threads.threads_for_call(2, proc=busy) == 2


def test_fitted_threads_sets_and_restores_the_count(two_cpus: None, two_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "threads_for_call", lambda configured: 1)
    with threads.fitted_threads(threads.MIN_TOKENS) as inside:
        assert inside == torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with threads.fitted_threads(threads.MIN_TOKENS - 1) as inside:  # short calls are left alone
        assert inside == torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), threads.fitted_threads(threads.MIN_TOKENS):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def _chunked_pair() -> tuple[MegaBackbone, MegaBackbone]:
    """A chunked core model and its cpu_fast copy."""
    torch.manual_seed(0)
    reference = MegaBackbone(tiny_config(use_chunking=True, chunk_size=16)).eval()
    return reference, accelerated(reference_copy(reference))


def _stack_thread_counts(model: torch.nn.Module) -> list[int]:
    """From now on, the thread count at each call of ``model``'s first layer (inside the stack's call)."""
    seen: list[int] = []
    model.layers[0].register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    return seen


def test_the_stack_runs_a_long_call_on_the_free_cores(two_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "threads_for_call", lambda configured: 1)
    reference, model = _chunked_pair()
    model.layers.__class__ = HandOverStack  # the stack's own fit: no whole-model fit around it
    threads.detach_model_fit(model)
    seen = _stack_thread_counts(model)
    tokens = torch.randint(3, 50, (2, threads.MIN_TOKENS // 2))
    with torch.inference_mode():
        hidden = model(tokens).hidden
    assert seen == [1] and torch.get_num_threads() == 2
    with torch.inference_mode():
        torch.testing.assert_close(hidden, reference(tokens).hidden, atol=2e-5, rtol=1e-4)


def test_a_whole_model_fits_every_call_even_a_decoding_step(two_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # a short call too: the stack alone would leave it on the configured count (MIN_TOKENS)
    monkeypatch.setattr(threads, "threads_for_call", lambda configured: 1)
    reference, model = _chunked_pair()
    seen = _stack_thread_counts(model)
    tokens = torch.randint(3, 50, (1, 3))
    with torch.inference_mode():
        hidden = model(tokens).hidden
    assert seen == [1] and torch.get_num_threads() == 2
    # the count comes back when the call raises
    model.layers[0].register_forward_pre_hook(lambda module, args: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"), torch.inference_mode():
        model(tokens)
    assert seen == [1, 1] and torch.get_num_threads() == 2
    with torch.inference_mode():
        torch.testing.assert_close(hidden, reference(tokens).hidden, atol=2e-5, rtol=1e-4)


def test_nested_fitted_models_restore_in_order(two_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([1, 1])
    monkeypatch.setattr(threads, "threads_for_call", lambda configured: next(answers) if configured > 1 else configured)
    outer = torch.nn.Sequential(accelerated(MegaBackbone(tiny_config()).eval()))
    threads.attach_model_fit(outer)
    inner_seen = _stack_thread_counts(outer[0])
    with torch.inference_mode():
        outer(torch.randint(3, 50, (1, 4)))
    assert inner_seen == [1] and torch.get_num_threads() == 2


def test_the_model_fit_is_attached_once_and_removed_by_restore() -> None:
    from mega_plugin.backends import accelerate, restore

    model = accelerated(MegaBackbone(tiny_config()).eval())
    assert not threads.attach_model_fit(model)  # accelerate attached it already
    accelerate(model, names=["cpu_fast"])
    assert len(model._forward_pre_hooks) == len(model._forward_hooks) == 1
    restore(model)
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert not model._forward_hooks_always_called
    untouched = MegaBackbone(tiny_config()).eval()
    accelerate(untouched, names="none")
    assert not untouched._forward_pre_hooks


def test_a_captured_graph_gets_no_thread_change(two_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "threads_for_call", lambda configured: 1)
    monkeypatch.setattr(threads, "capturing_graph", lambda: True)
    model = accelerated(MegaBackbone(tiny_config()).eval())
    model.layers.__class__ = type(model.layers).__mro__[1]  # the core stack: no fit of its own
    seen = _stack_thread_counts(model)
    with torch.inference_mode():
        model(torch.randint(3, 50, (1, 4)))
    assert seen == [2]


def test_a_reading_of_the_real_proc_is_reused_briefly(two_cpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    readings: list[Path] = []
    clock = iter([100.0, 100.01, 100.2])
    monkeypatch.setattr(threads, "_running_elsewhere", lambda proc: readings.append(proc) or 1)
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(threads, "_last_reading", (float("-inf"), None))
    assert [threads.threads_for_call(2) for _ in range(3)] == [1, 1, 1]
    assert len(readings) == 2  # 10 ms later: reused; 200 ms later: read again
    assert threads.threads_for_call(2, proc=Path("/elsewhere")) == 1
    assert readings[-1] == Path("/elsewhere")  # an explicit /proc is always read
