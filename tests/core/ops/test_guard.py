"""The call-time guard of plugin kernels: misbehaving kernels fall back to the reference kernel
with a warning naming the plugin; a good kernel proves itself once per signature and is then
called without any check. Expected outputs are the reference kernel's own."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Final, Iterator

import pytest
import torch
from torch import Tensor

import mega_plugin.core.ops.guard as guard
from _support.attention import attention_inputs, attention_options
from _support.plugins import GUARD_REPORTS, MISBEHAVIOURS, CountingKernel, misbehaving_kernel
from mega_plugin.core.ops import (
    EmaCoefficients,
    EmaOptions,
    KernelError,
    KernelGuardWarning,
    KernelSpec,
    Rejected,
    guard_kernel,
    reference_attention,
    reference_ema,
    register_kernel,
    run_attention,
    run_ema,
    select,
    unregister_kernel,
)
from mega_plugin.core.ops.guard import GuardedKernel
from mega_plugin.core.ops.guard_checks import attention_signature, ema_signature

PLUGIN: Final = "'misbehaving' from fake-misbehaving"
NAME: Final = "guarded_under_test"
OPS: Final = ("ema", "attention")


def ema_arguments(length: int = 8, *, return_state: bool = False) -> tuple[Any, ...]:
    """x (2, L, 4), coefficients (4, 3), no initial state, causal options."""
    generator = torch.Generator().manual_seed(length)
    coefficients = EmaCoefficients(
        input_gain=torch.rand(4, 3, generator=generator),
        decay=torch.rand(4, 3, generator=generator) * 0.9,
        output_gain=torch.randn(4, 3, generator=generator),
    )
    options = EmaOptions(bidirectional=False, truncation=None, return_state=return_state)
    return torch.randn(2, length, 4, generator=generator), coefficients, None, options


def bidirectional_ema_arguments() -> tuple[Any, ...]:
    """x (2, 5, 4), coefficients (8, 3) (forward rows first), truncated to 3 lags."""
    x, coefficients, _, _ = ema_arguments(5)
    both = EmaCoefficients(*(torch.cat([value, value.flip(0)]) for value in vars(coefficients).values()))
    return x, both, None, EmaOptions(bidirectional=True, truncation=3, return_state=False)


def attention_arguments(length: int = 8, *, need_weights: bool = False) -> tuple[Any, ...]:
    """One unmasked causal softmax frame of ``length`` queries and keys (batch 2)."""
    query, key, value, bias, _ = attention_inputs(2, 1, length, length, padded=False)
    return query, key, value, bias, None, attention_options(causal=True, need_weights=need_weights)


ARGUMENTS: Final[dict[str, Callable[..., tuple[Any, ...]]]] = {"ema": ema_arguments, "attention": attention_arguments}
REFERENCE: Final[dict[str, Callable[..., Any]]] = {"ema": reference_ema, "attention": reference_attention}


def run(op: str, args: tuple[Any, ...], *, kernel: str = "auto") -> tuple[Tensor, Tensor | None]:
    """The op as the layers run it (``run_ema`` / ``run_attention``)."""
    return (run_ema if op == "ema" else run_attention)(*args, kernel=kernel)


@pytest.fixture
def install() -> Iterator[Callable[..., GuardedKernel]]:
    """Registers guarded kernels (as the plugin registry does for plugin kernels); removed afterwards."""
    names: list[tuple[str, str]] = []

    def register(op: str, fn: Callable[..., Any], *, name: str = NAME, priority: int = 100) -> GuardedKernel:
        spec = guard_kernel(KernelSpec(name=name, op=op, fn=fn, priority=priority, source="fake-misbehaving"), plugin=PLUGIN)
        register_kernel(spec)
        names.append((op, name))
        assert isinstance(spec.fn, GuardedKernel)
        return spec.fn

    yield register
    for op, name in names:
        unregister_kernel(op, name)


def assert_equal_outputs(actual: tuple[Any, Any], expected: tuple[Any, Any]) -> None:
    for got, want in zip(actual, expected):
        if want is None:
            assert got is None
        else:
            assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("how", MISBEHAVIOURS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("requested", ["auto", NAME])
def test_a_misbehaving_kernel_falls_back_to_the_reference_with_one_warning_naming_the_plugin(
    install: Callable[..., GuardedKernel], op: str, how: str, requested: str
) -> None:
    calls = CountingKernel(op)
    calls.reference = misbehaving_kernel(op, how)  # counts, then misbehaves
    install(op, calls)
    args = ARGUMENTS[op]()
    with pytest.warns(KernelGuardWarning) as caught:
        result = run(op, args, kernel=requested)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"{op} kernel {NAME!r} of plugin {PLUGIN}" in message and GUARD_REPORTS[how] in message, message
    assert_equal_outputs(result, REFERENCE[op](*args))
    # Rejected for the signature: later calls (other lengths too) never reach the kernel, and do not warn.
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelGuardWarning)
        for length in (8, 12):
            later = ARGUMENTS[op](length)
            result, expected = run(op, later, kernel=requested), REFERENCE[op](*later)
            if requested == NAME:  # named: the reference itself serves the call
                assert_equal_outputs(result, expected)
            else:  # auto: the next kernel (a built-in fast one when plugins are loaded)
                torch.testing.assert_close(result, expected)
    assert calls.calls == 1


@pytest.mark.parametrize("op", OPS)
def test_auto_goes_straight_to_the_next_kernel_once_the_best_one_is_rejected(
    install: Callable[..., GuardedKernel], op: str
) -> None:
    install(op, misbehaving_kernel(op, "wrong_shape"), priority=100)
    second = CountingKernel(op)
    guarded_second = install(op, second, name="second_choice", priority=99)
    call = (ema_call_of if op == "ema" else attention_call_of)(ARGUMENTS[op]())
    assert select(op, "auto", call).name == NAME
    with pytest.warns(KernelGuardWarning):
        run(op, ARGUMENTS[op]())
    assert second.calls == 0
    rejected = select(op, "auto", call)
    assert rejected.name == "second_choice"
    answer = next(s for s in _specs(op) if s.name == NAME).supports(call)
    assert isinstance(answer, Rejected) and "returned output of shape" in answer.reason
    args = ARGUMENTS[op]()
    assert_equal_outputs(run(op, args), REFERENCE[op](*args))
    assert second.calls == 1 and len(guarded_second.proven) == 1  # this call proved it


@pytest.mark.parametrize("op", OPS)
def test_a_good_kernel_is_proven_by_one_call_and_then_runs_without_checks(
    install: Callable[..., GuardedKernel], op: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = CountingKernel(op)
    guarded = install(op, kernel)
    checks = {"output_problem": 0, "run_reference": 0, "finiteness_problem": 0}
    for name in checks:
        real = getattr(guard, name)

        def spy(*args: Any, _name: str = name, _real: Callable[..., Any] = real) -> Any:
            checks[_name] += 1
            return _real(*args)

        monkeypatch.setattr(guard, name, spy)
    args = ARGUMENTS[op]()
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelGuardWarning)
        assert_equal_outputs(run(op, args), REFERENCE[op](*args))
        assert checks == {"output_problem": 1, "run_reference": 1, "finiteness_problem": 1}
        assert len(guarded.proven) == 1
        for length in (8, 12, 31):  # the same signature: no check, no reference run
            later = ARGUMENTS[op](length)
            assert_equal_outputs(run(op, later), REFERENCE[op](*later))
        assert checks == {"output_problem": 1, "run_reference": 1, "finiteness_problem": 1}
        assert kernel.calls == 4
        one_step = ARGUMENTS[op](1)  # a new signature (one step / one query) proves itself again
        run(op, one_step)
    assert checks == {"output_problem": 2, "run_reference": 2, "finiteness_problem": 2}
    assert len(guarded.proven) == 2


@pytest.mark.parametrize("op", OPS)
def test_a_proven_kernel_that_raises_later_falls_back_too(install: Callable[..., GuardedKernel], op: str) -> None:
    state = {"broken": False}
    reference = REFERENCE[op]

    def flaky(*args: Any) -> Any:
        if state["broken"]:
            raise ValueError("out of workspace")
        return reference(*args)

    guarded = install(op, flaky)
    run(op, ARGUMENTS[op]())
    assert len(guarded.proven) == 1
    state["broken"] = True
    args = ARGUMENTS[op](12)
    with pytest.warns(KernelGuardWarning, match=rf"of plugin {PLUGIN} raised ValueError: out of workspace"):
        result = run(op, args)
    assert_equal_outputs(result, reference(*args))
    assert not guarded.proven and len(guarded.rejected) == 1


@pytest.mark.parametrize(
    "op, args, report",
    [
        ("ema", ema_arguments(return_state=True), "returned NoneType as its state, expected a tensor of shape (2, 4, 3)"),
        ("attention", attention_arguments(need_weights=True), "returned NoneType as its weights"),
    ],
    ids=["ema-state-missing", "attention-weights-missing"],
)
def test_the_second_output_is_checked_when_the_call_asks_for_it(
    install: Callable[..., GuardedKernel], op: str, args: tuple[Any, ...], report: str
) -> None:
    reference = REFERENCE[op]
    install(op, lambda *a: (reference(*a)[0], None))
    with pytest.warns(KernelGuardWarning, match=report.replace("(", r"\(").replace(")", r"\)")):
        result = run(op, args)
    assert_equal_outputs(result, reference(*args))


def test_no_check_runs_while_a_graph_is_captured(
    install: Callable[..., GuardedKernel], monkeypatch: pytest.MonkeyPatch
) -> None:
    guarded = install("ema", misbehaving_kernel("ema", "nan"))
    monkeypatch.setattr(guard, "capturing_graph", lambda: True)
    args = ema_arguments()
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelGuardWarning)
        output, _ = guarded(*args)
    assert torch.isnan(output).any()  # the kernel's own result: nothing read, nothing compared
    assert not guarded.proven and not guarded.rejected


def test_guarded_calls_under_torch_compile_run_the_reference_in_one_graph(install: Callable[..., GuardedKernel]) -> None:
    install("ema", misbehaving_kernel("ema", "nan"))
    args = ema_arguments()
    compiled = torch.compile(lambda x: run_ema(x, *args[1:], kernel=NAME)[0], backend="eager", fullgraph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelGuardWarning)
        output = compiled(args[0])
    assert torch.equal(output, reference_ema(*args)[0])


def test_the_signature_keeps_what_a_kernel_branches_on_and_not_the_lengths() -> None:
    from _support.calls import attention_call, ema_call

    assert ema_signature(ema_call(length=8)) == ema_signature(ema_call(length=300))
    assert ema_signature(ema_call(length=8)) != ema_signature(ema_call(length=1))
    for change in ({"has_state": True}, {"bidirectional": True}, {"dtype": torch.float16}):
        assert ema_signature(ema_call(**change)) != ema_signature(ema_call())
    assert attention_signature(attention_call(query_length=8, key_length=8)) == attention_signature(
        attention_call(query_length=40, key_length=40)
    )
    for change in (
        {"query_length": 1, "key_length": 9},
        {"query_length": 4, "key_length": 12},
        {"num_chunks": 3},
        {"causal": True},
        {"activation": "laplace"},
        {"has_key_mask": True},
        {"need_weights": True},
    ):
        assert attention_signature(attention_call(**change)) != attention_signature(attention_call()), change


def _specs(op: str) -> list[KernelSpec]:
    from mega_plugin.core.ops import kernels

    return kernels(op)


def ema_call_of(args: tuple[Any, ...]) -> Any:
    from _support.calls import ema_call

    x, _, state, options = args
    return ema_call(length=x.shape[1], has_state=state is not None or options.return_state)


def attention_call_of(args: tuple[Any, ...]) -> Any:
    from _support.calls import attention_call

    query, key, _, _, mask, options = args
    return attention_call(
        causal=options.causal, query_length=query.shape[-2], key_length=key.shape[-2], has_key_mask=mask is not None
    )


@pytest.mark.parametrize(
    "op, args",
    [
        ("ema", ema_arguments(8)),
        ("ema", ema_arguments(1, return_state=True)),
        ("ema", bidirectional_ema_arguments()),
        ("attention", attention_arguments(8)),
        ("attention", attention_arguments(8, need_weights=True)),
        ("attention", (*attention_inputs(2, 3, 4, 9, padded=True), attention_options(activation="relu2"))),
        ("attention", (*attention_inputs(1, 1, 1, 6, padded=False), attention_options(causal=True, query_offset=5))),
    ],
    ids=["ema", "ema-one-step-state", "ema-bidirectional-truncated", "attention", "attention-weights",
         "attention-chunks-mask-relu2", "attention-one-query"],  # fmt: skip
)
def test_the_key_from_a_kernels_arguments_is_the_key_of_the_call_the_op_built(
    op: str, args: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mega_plugin.core.ops as ops
    from mega_plugin.core.ops.guard_checks import ARGS_SIGNATURES, signature

    calls: list[Any] = []
    real = ops.select
    monkeypatch.setattr(ops, "select", lambda o, name, call: calls.append(call) or real(o, name, call))
    run(op, args, kernel="reference")
    [call] = calls
    assert ARGS_SIGNATURES[op](*args) == signature(op, call)


def test_strict_mode_raises_instead_of_falling_back(install: Callable[..., GuardedKernel]) -> None:
    spec = guard_kernel(
        KernelSpec(name=NAME, op="ema", fn=misbehaving_kernel("ema", "nan"), source="fake-misbehaving"),
        plugin=PLUGIN,
        strict=lambda: True,
    )
    with pytest.raises(KernelError, match=rf"ema kernel {NAME!r} of plugin {PLUGIN} returned NaN or inf .*STRICT"):
        spec.fn(*ema_arguments())
    assert not spec.fn.rejected and not spec.fn.proven


def test_the_proving_call_leaves_the_random_stream_to_the_kernel(install: Callable[..., GuardedKernel]) -> None:
    kernel = CountingKernel("attention")
    guarded = install("attention", kernel)
    query, key, value, bias, mask, _ = attention_arguments(8)
    args = (query, key, value, bias, mask, attention_options(dropout_p=0.5, training=True))
    torch.manual_seed(3)
    proved, _ = guarded(*args)  # the proving call: kernel, then the reference run for the comparison
    after_proving = torch.rand(4)
    torch.manual_seed(3)
    alone, _ = reference_attention(*args)  # what the kernel gives on its own
    assert len(guarded.proven) == 1
    assert torch.equal(proved, alone) and torch.equal(after_proving, torch.rand(4))


@pytest.mark.parametrize("op", OPS)
def test_the_fallback_result_carries_the_reference_gradient(install: Callable[..., GuardedKernel], op: str) -> None:
    install(op, misbehaving_kernel(op, "nan"))
    args = ARGUMENTS[op]()
    leaf = args[0].clone().requires_grad_(True)
    with pytest.warns(KernelGuardWarning):
        output, _ = run(op, (leaf, *args[1:]))
    output.sum().backward()
    expected_leaf = args[0].clone().requires_grad_(True)
    REFERENCE[op](expected_leaf, *args[1:])[0].sum().backward()
    assert torch.equal(leaf.grad, expected_leaf.grad)


def test_a_spec_already_behind_a_guard_gets_one_guard_not_two() -> None:
    kernel = CountingKernel("ema")
    once = guard_kernel(KernelSpec(name=NAME, op="ema", fn=kernel, source="fake-misbehaving"), plugin=PLUGIN)
    twice = guard_kernel(once, plugin="'again' from fake-again")
    assert isinstance(twice.fn, GuardedKernel) and twice.fn.fn is kernel and twice.fn.plugin == "'again' from fake-again"
