"""In-process plugins for the registry tests: fake entry points, small plugin objects, and
kernels that misbehave at call time (for the call-time guard).

The installed example/broken plugin packages (``tests/registry/plugins``) and the fixtures
that build them are in ``tests/registry/conftest.py``.
"""

from __future__ import annotations

from typing import Any, Callable, Final

import pytest

import mega_plugin.registry.manager as manager
from mega_plugin.core.ops import reference_attention, reference_ema
from mega_plugin.registry import hookimpl
from mega_plugin.registry.discovery import Candidate


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *plugins: tuple[str, object]) -> None:
    """Make discovery see in-process plugin objects as entry points ``fake-<name>/<name>``."""
    fake_imports(monkeypatch, *((name, lambda plugin=plugin: plugin) for name, plugin in plugins))


def fake_imports(monkeypatch: pytest.MonkeyPatch, *imports: tuple[str, Callable[[], object]]) -> None:
    """Entry points ``fake-<name>/<name>`` whose loading runs the given function, as an import would
    run a module: it returns the plugin object, and may register things directly or raise."""
    candidates = [Candidate(name, f"fake-{name}", "1.0", f"fake:{name}", load) for name, load in imports]
    monkeypatch.setattr(manager, "entry_point_candidates", lambda: candidates)


def forwarding_ema(x: Any, coefficients: Any, initial_state: Any, options: Any) -> Any:
    """An EMA kernel with a valid signature that forwards to the reference EMA."""
    return reference_ema(x, coefficients, initial_state, options)


def kernel_plugin(op: str, name: str, fn: Callable[..., Any], **options: Any) -> object:
    """A plugin object whose kernels hook registers one kernel: ``registry.register(op, name, fn, **options)``."""

    class KernelPlugin:
        @hookimpl
        def mega_plugin_register_kernels(self, registry: Any) -> None:
            registry.register(op, name, fn, **options)

    return KernelPlugin()


def unavailable_plugin() -> object:
    """Registers the best EMA kernel, ``needs_gpu``, but one whose hardware is missing (``no GPU here``)."""
    return kernel_plugin("ema", "needs_gpu", forwarding_ema, priority=100, is_available=lambda: "no GPU here")


MISBEHAVIOURS: Final = ("wrong_shape", "wrong_dtype", "wrong_device", "nan", "raises")
"""How a :func:`misbehaving_kernel` goes wrong, and what the call-time guard reports for each."""

GUARD_REPORTS: Final[dict[str, str]] = {
    "wrong_shape": "returned output of shape",
    "wrong_dtype": "returned output of dtype torch.float64",
    "wrong_device": "returned output on device meta, expected cpu",
    "nan": "returned NaN or inf at 1 of",
    "raises": "raised RuntimeError: this kernel breaks at call time",
}


def misbehaving_kernel(op: str, how: str) -> Callable[..., Any]:
    """A kernel of ``op`` (valid signature) that runs the reference kernel and then goes wrong ``how``.

    ``wrong_shape`` drops the last feature column, ``wrong_dtype`` returns float64,
    ``wrong_device`` returns the output on the ``meta`` device, ``nan`` puts
    one NaN into an output the reference has finite, ``raises`` raises ``RuntimeError``.
    """
    reference = reference_ema if op == "ema" else reference_attention

    def kernel(*args: Any) -> Any:
        if how == "raises":
            raise RuntimeError("this kernel breaks at call time")
        output, extra = reference(*args)
        if how == "wrong_shape":
            output = output[..., :-1]
        elif how == "wrong_dtype":
            output = output.double()
        elif how == "wrong_device":
            output = output.to("meta")
        elif how == "nan":
            output = output.clone()
            output[(0,) * output.dim()] = float("nan")
        return output, extra

    return kernel


class CountingKernel:
    """A kernel of ``op`` that forwards to the reference kernel and counts its calls."""

    def __init__(self, op: str) -> None:
        self.reference = reference_ema if op == "ema" else reference_attention
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.reference(*args)
