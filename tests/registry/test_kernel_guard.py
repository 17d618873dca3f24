"""Plugin kernels run behind the call-time guard; the built-in kernels never do.

A model asking for a misbehaving plugin kernel gives exactly the output of the same model
asking for the reference kernel, with one warning naming the plugin as ``list_plugins()``
records it (entry point and distribution).
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any, Final

import pytest
import torch

import mega_plugin.core.ops.guard as guard
from _support.calls import record_kernel_choices
from _support.configs import CAUSAL, tiny_config
from _support.plugins import (
    GUARD_REPORTS,
    MISBEHAVIOURS,
    CountingKernel,
    fake_entry_points,
    kernel_plugin,
    misbehaving_kernel,
)
from mega_plugin.core import MegaBackbone
from mega_plugin.core.ops import KernelGuardWarning, guarded_kernel
from mega_plugin.registry.records import LOADED

KERNEL_OPTION: Final = {"ema": "ema_kernel", "attention": "attention_kernel"}


def token_ids() -> torch.Tensor:
    return torch.randint(3, 50, (2, 12), generator=torch.Generator().manual_seed(0))


def hidden(kernel_option: str, kernel: str, *, causal: bool = False) -> torch.Tensor:
    """The last hidden state of a tiny model (fixed seed) that asks for ``kernel``."""
    torch.manual_seed(0)
    config = tiny_config(**{kernel_option: kernel}, **(CAUSAL if causal else {}))
    with torch.no_grad():
        return MegaBackbone(config).eval()(token_ids()).hidden


@pytest.mark.parametrize("how", MISBEHAVIOURS)
@pytest.mark.parametrize("op", ["ema", "attention"])
def test_a_model_asking_for_a_misbehaving_plugin_kernel_gets_the_reference_result_and_one_warning(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch, op: str, how: str
) -> None:
    name = f"{op}_{how}"
    fake_entry_points(monkeypatch, ("misbehaving", kernel_plugin(op, name, misbehaving_kernel(op, how), priority=100)))
    record = {p.name: p for p in fresh_registry.list_plugins()}["misbehaving"]
    assert record.status == LOADED  # it registered fine: the trouble only shows at call time
    with pytest.warns(KernelGuardWarning) as caught:
        got = hidden(KERNEL_OPTION[op], name)
    relevant = [str(w.message) for w in caught if issubclass(w.category, KernelGuardWarning)]
    assert len(relevant) == 1, relevant  # two layers, one signature: one warning
    plugin = f"'{record.name}' from {record.distribution}"
    assert f"{op} kernel {name!r} of plugin {plugin} {GUARD_REPORTS[how]}" in relevant[0], relevant[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelGuardWarning)
        expected = hidden(KERNEL_OPTION[op], "reference")
        assert torch.equal(got, expected)
        assert torch.equal(hidden(KERNEL_OPTION[op], name), expected)  # rejected: no warning, the reference again


def test_a_good_plugin_kernel_proves_itself_on_its_first_call_and_is_never_checked_again(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = CountingKernel("ema")
    fake_entry_points(monkeypatch, ("good", kernel_plugin("ema", "counted", kernel, priority=100)))
    spec = {s.name: s for s in fresh_registry.list_kernels("ema")}["counted"]
    guarded = guarded_kernel(spec)
    assert guarded is not None and guarded.plugin == "'good' from fake-good"
    references = []
    real = guard.run_reference
    monkeypatch.setattr(guard, "run_reference", lambda op, args: references.append(op) or real(op, args))
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelGuardWarning)
        first = hidden("ema_kernel", "counted", causal=True)
        assert references == ["ema"] and kernel.calls == 2  # layer 1 proved it; layer 2 ran it unchecked
        second = hidden("ema_kernel", "counted", causal=True)
    assert references == ["ema"] and kernel.calls == 4
    assert torch.equal(first, second)
    torch.testing.assert_close(first, hidden("ema_kernel", "reference", causal=True))


def test_the_built_in_kernels_never_go_through_the_guard(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_registry.load_plugins()
    for op in ("ema", "attention"):
        built_in = [spec for spec in fresh_registry.list_kernels(op) if spec.source == "mega-plugin"]
        assert len(built_in) >= 2, built_in  # the reference and at least one fast kernel
        assert all(guarded_kernel(spec) is None for spec in built_in), built_in
    entered: list[Any] = []
    monkeypatch.setattr(guard.GuardedKernel, "__call__", lambda self, *args: entered.append(self))
    monkeypatch.setattr(guard, "output_problem", lambda *args: entered.append(args))
    chosen = record_kernel_choices(monkeypatch)
    for causal in (False, True):
        hidden("ema_kernel", "auto", causal=causal)
    assert chosen and not entered
    names = {spec.name: spec.source for op in ("ema", "attention") for spec in fresh_registry.list_kernels(op)}
    assert {names[choice.split("/")[1]] for choice in chosen} == {"mega-plugin"}
    assert any(not choice.endswith("/reference") for choice in chosen), chosen  # fast built-ins ran, unguarded


def test_plugin_kernels_from_an_installed_package_are_guarded(example_plugin: ModuleType) -> None:
    import mega_plugin.registry as registry

    spec = {s.name: s for s in registry.list_kernels("ema")}["example_scan"]
    guarded = guarded_kernel(spec)
    assert guarded is not None and guarded.fn is example_plugin.block_scan_ema
    assert guarded.plugin == "'example' from mega-plugin-example"


def test_strict_mode_makes_a_misbehaving_plugin_kernel_an_error(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mega_plugin.core.ops import KernelError

    fake_entry_points(monkeypatch, ("misbehaving", kernel_plugin("ema", "nan_ema", misbehaving_kernel("ema", "nan"))))
    monkeypatch.setenv("MEGA_PLUGIN_STRICT", "1")
    with pytest.raises(KernelError, match="ema kernel 'nan_ema' of plugin 'misbehaving' from fake-misbehaving returned NaN"):
        hidden("ema_kernel", "nan_ema")
