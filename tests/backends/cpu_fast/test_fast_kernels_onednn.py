"""oneDNN in the ``cpu_fast`` backend: ``OneDnnLinear`` and the ``onednn`` attention kernel against
float64 ground truth and the reference path.

oneDNN's GEMMs differ from MKL's in summation order only, so every comparison is made against
float64 arithmetic on the same fp32 inputs (outputs and gradients), with fp32 rounding as
the tolerance. The dispatch tests check which calls oneDNN serves, and that wrappers, hooks,
autocast and ``torch.backends.mkldnn.flags(enabled=False)`` keep torch's own ops.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Final

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mega_plugin.backends.cpu_fast.linear as linear_module
from _support.attention import attention_options
from _support.backends import accelerated, reference_copy, requires_onednn
from _support.calls import attention_call, record_kernel_choices
from _support.configs import tiny_config
from _support.numerics import in_float64, with_grads
from mega_plugin.backends import cpu_fast
import mega_plugin.backends.cpu_fast.attention_onednn as attention_module
import mega_plugin.backends.cpu_fast.onednn as onednn_module
from mega_plugin.backends.cpu_fast.attention_onednn import (
    MIN_FRAME_ELEMENTS,
    onednn_attention,
    onednn_attention_supports,
    softmax_slice_in_place,
)
from mega_plugin.backends.cpu_fast.linear import MIN_ROWS, OneDnnLinear
from mega_plugin.backends.cpu_fast.onednn import (
    context_allows,
    fused_add_available,
    matmul_nt,
    matmul_nt_add,
    onednn_available,
    unsupported_tensor,
)
from mega_plugin.core import MegaBackbone
from mega_plugin.core.ops import KernelError, declined, reference_attention, select

pytestmark = requires_onednn

FP32: Final = dict(rtol=2e-5, atol=2e-5)


@pytest.fixture
def onednn_gemms(monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    """The weight of every projection ``OneDnnLinear`` ran as a oneDNN GEMM, in call order."""
    served: list[Tensor] = []
    real = linear_module.matmul_nt

    def spy(rows: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        served.append(weight)
        return real(rows, weight, bias)

    monkeypatch.setattr(linear_module, "matmul_nt", spy)
    return served


def fast_linear(in_features: int, out_features: int, *, bias: bool = True) -> nn.Linear:
    """An ``nn.Linear`` swapped to ``OneDnnLinear`` by the backend, as in an accelerated model."""
    module = nn.Linear(in_features, out_features, bias=bias)
    assert cpu_fast.accelerate(module) == 1 and type(module) is OneDnnLinear
    return module


# --- OneDnnLinear: the arithmetic ---------------------------------------------------------------


def _input(layout: str, rows: int, features: int, generator: torch.Generator) -> Tensor:
    if layout == "2d":
        return torch.randn(rows, features, generator=generator)
    if layout == "3d":
        return torch.randn(3, rows, features, generator=generator)
    if layout == "transposed":  # (rows, features) read from a (features, rows) tensor, as channel-major EMA output is
        return torch.randn(features, rows, generator=generator).t()
    if layout == "sliced":  # every other row: a strided view that is not a transpose
        return torch.randn(2 * rows, features, generator=generator)[::2]
    raise AssertionError(layout)


@pytest.fixture
def every_call_served(monkeypatch: pytest.MonkeyPatch, onednn_gemms: list[Tensor]) -> list[Tensor]:
    """``OneDnnLinear`` serves calls of any number of rows (decoding-sized ones too); returns the GEMM log."""
    monkeypatch.setattr(linear_module, "MIN_ROWS", 1)
    return onednn_gemms


def functional_linear(module: nn.Linear) -> Callable[..., Tensor]:
    """``module``'s forward as a function of (input, weight, bias): the leaves tests differentiate."""

    def run(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        parameters = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
        return torch.func.functional_call(module, parameters, (x,))

    return run


@pytest.mark.parametrize("layout", ["2d", "3d", "transposed", "sliced"])
@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(
    "shape", [(37, 19, 23), (1, 5, 3), (300, 256, 1088), (1024, 256, 1088)], ids=["odd", "one-row", "mx-proj", "mx-block"]
)
def test_linear_matches_float64_outputs_and_gradients(
    shape: tuple[int, int, int], has_bias: bool, layout: str, every_call_served: list[Tensor]
) -> None:
    rows, features, outputs = shape
    generator = torch.Generator().manual_seed(rows * 7 + outputs)
    x = _input(layout, rows, features, generator).requires_grad_()
    weight = torch.randn(outputs, features, generator=generator).requires_grad_()
    bias = torch.randn(outputs, generator=generator).requires_grad_() if has_bias else None
    expected, expected_grads = in_float64(F.linear, x, weight, bias)
    got, got_grads = with_grads(functional_linear(fast_linear(features, outputs, bias=has_bias)), x, weight, bias)
    assert len(every_call_served) == 1, "the projection did not run in oneDNN"
    assert got.dtype == torch.float32 and got.shape == expected.shape
    scale = 1 + features**0.5
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5 * scale)
    for name, g, e in zip(["input", "weight", "bias"], got_grads, expected_grads):
        torch.testing.assert_close(g.double(), e, rtol=1e-5, atol=1e-5 * scale * rows**0.5, msg=name)


@pytest.mark.parametrize(
    "rows,inputs,outputs,a_layout,through_a",
    [
        (1024, 256, 1088, "2d", True),  # the projections' blocks: copying a (M, K) and the result is half
        (300, 256, 1088, "2d", False),  # fewer rows: copying grad (M, N) is less
        (300, 256, 1088, "transposed", True),  # a.T is contiguous: only the result is copied
        (256, 256, 512, "2d", False),  # an attention frame's w @ v
    ],
)
def test_weight_gradient_copies_the_smaller_operand(rows: int, inputs: int, outputs: int, a_layout: str, through_a: bool) -> None:
    generator = torch.Generator().manual_seed(rows + outputs)
    grad = torch.randn(rows, outputs, generator=generator)
    a = _input(a_layout, rows, inputs, generator)
    got = onednn_module._weight_gradient(grad, a)
    assert got.shape == (outputs, inputs)
    assert got.t().is_contiguous() == through_a  # the path through a gives the transpose of its result
    torch.testing.assert_close(got.double(), grad.double().t() @ a.double(), rtol=1e-5, atol=1e-5 * rows**0.5)


def test_linear_gradient_of_a_broadcast_upstream(every_call_served: list[Tensor]) -> None:
    """``.sum().backward()`` hands a stride-0 gradient to the backward GEMMs."""
    x = torch.randn(6, 4).requires_grad_()
    weight = torch.randn(5, 4).requires_grad_()
    functional_linear(fast_linear(4, 5, bias=False))(x, weight, None).sum().backward()
    assert len(every_call_served) == 1
    torch.testing.assert_close(x.grad, weight.sum(0).expand(6, 4), **FP32)
    torch.testing.assert_close(weight.grad, x.sum(0).expand(5, 4), **FP32)


def test_linear_double_backward(every_call_served: list[Tensor]) -> None:
    """Under ``create_graph`` the backward is differentiable (gradient penalties, Hessian-vector products)."""
    x = torch.randn(4, 3, dtype=torch.float32, requires_grad=True)
    weight = torch.randn(2, 3, requires_grad=True)
    output = functional_linear(fast_linear(3, 2, bias=False))(x, weight, None)
    assert len(every_call_served) == 1
    (grad_x,) = torch.autograd.grad(output.square().sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(grad_x.sum(), weight)
    x64, w64 = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    (g64,) = torch.autograd.grad(F.linear(x64, w64).square().sum(), x64, create_graph=True)
    (second64,) = torch.autograd.grad(g64.sum(), w64)
    torch.testing.assert_close(second.double(), second64, **FP32)


def test_the_availability_probe_runs_on_the_cpu_under_a_meta_default_device() -> None:
    """transformers builds a model under ``with torch.device("meta")`` and the adapters accelerate it
    there: the first probe of oneDNN may run in that context."""
    expected = onednn_available(), fused_add_available()
    onednn_available.cache_clear()
    fused_add_available.cache_clear()
    with torch.device("meta"):
        assert (onednn_available(), fused_add_available()) == expected


def test_a_probe_declines_an_op_that_disagrees_or_fails() -> None:
    without_addend = onednn_module._probe("dropped addend", lambda a, b, addend: a @ b.t(), addend_shape=(5, 3))
    assert not without_addend.ok and without_addend.reason == "dropped addend disagrees with torch.addmm on a probe"

    def fails(a: Tensor, b: Tensor, addend: Tensor) -> Tensor:
        raise RuntimeError("no kernel")

    failing = onednn_module._probe("failing op", fails, addend_shape=(3,))
    assert not failing.ok and failing.reason == "failing op failed on a probe (RuntimeError: no kernel)"
    assert onednn_module._probe("addmm", lambda a, b, addend: torch.addmm(addend, a, b.t()), addend_shape=(3,)).ok


def test_matmul_nt_without_grad_records_nothing() -> None:
    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(5, 4)
    with torch.no_grad():
        out = matmul_nt(a, b)
    assert out.grad_fn is None and not out.requires_grad


# --- which projections OneDnnLinear serves ---------------------------------------------------------


def test_fp32_cpu_projections_run_in_onednn(onednn_gemms: list[Tensor]) -> None:
    module = fast_linear(8, 6)
    x = torch.randn(2, MIN_ROWS, 8)
    out = module(x)
    assert [weight is module.weight for weight in onednn_gemms] == [True]
    torch.testing.assert_close(out, F.linear(x, module.weight, module.bias), **FP32)


def test_decoding_steps_keep_torch_ops(onednn_gemms: list[Tensor]) -> None:
    """Fewer than MIN_ROWS rows (a decoding step) stay on F.linear: MKL's GEMV has less overhead."""
    module = fast_linear(8, 6)
    step = torch.randn(1, 1, 8)
    assert torch.equal(module(step), F.linear(step, module.weight, module.bias))
    module(torch.randn(MIN_ROWS - 1, 8))
    assert onednn_gemms == []


@pytest.mark.parametrize(
    "context,reason",
    [
        (lambda: torch.backends.mkldnn.flags(enabled=False), "disabled"),
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16), "autocast"),
    ],
    ids=["mkldnn-off", "autocast"],
)
def test_contexts_that_keep_torch_ops(context: Callable[[], Any], reason: str, onednn_gemms: list[Tensor]) -> None:
    module = fast_linear(8, 6)
    plain = nn.Linear(8, 6)
    plain.load_state_dict(module.state_dict())
    x = torch.randn(2, MIN_ROWS, 8)
    with context():
        allowed = context_allows()
        assert not allowed.ok and reason in allowed.reason
        out = module(x)
        expected = plain(x)
    assert onednn_gemms == []
    assert out.dtype == expected.dtype  # bf16 under autocast, as nn.Linear gives
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes_keep_torch_ops(dtype: torch.dtype, onednn_gemms: list[Tensor]) -> None:
    module = fast_linear(8, 6).to(dtype)
    x = torch.randn(MIN_ROWS, 8, dtype=dtype)
    assert torch.equal(module(x), F.linear(x, module.weight, module.bias))
    assert onednn_gemms == []


def test_wrappers_and_hooks_see_every_call(onednn_gemms: list[Tensor]) -> None:
    """A subclass (PEFT/LoRA-style wrapper) is left as it is, and a swapped module keeps its hooks."""

    class Scaled(nn.Linear):
        def forward(self, x: Tensor) -> Tensor:
            return 2 * super().forward(x)

    wrapped = Scaled(8, 6)
    assert cpu_fast.accelerate(wrapped) == 0 and type(wrapped) is Scaled
    x = torch.randn(MIN_ROWS, 8)
    torch.testing.assert_close(wrapped(x), 2 * F.linear(x, wrapped.weight, wrapped.bias))
    plain = nn.Linear(8, 6)
    calls: list[int] = []
    handle = plain.register_forward_hook(lambda module, args, out: calls.append(1))
    cpu_fast.accelerate(plain)
    assert type(plain) is OneDnnLinear
    plain(x)
    handle.remove()
    plain(x)
    assert calls == [1]
    assert len(onednn_gemms) == 2


def test_broadcast_operands_are_declined(onednn_gemms: list[Tensor]) -> None:
    x = torch.randn(1, 8).expand(MIN_ROWS, 8)
    assert unsupported_tensor(x) is not None
    module = fast_linear(8, 6)
    torch.testing.assert_close(module(x), F.linear(x, module.weight, module.bias), rtol=0, atol=0)
    assert onednn_gemms == []


# --- attention (outputs and gradients: test_fast_kernels_query_blocks.py) -----------------------


ATTENTION_CALL: Final = attention_call(query_length=256, key_length=256, num_chunks=8, has_key_mask=True)


def test_auto_picks_onednn_for_cpu_frames_of_chunk_size_128_and_more() -> None:
    assert select("attention", "auto", ATTENTION_CALL).name == "onednn"
    small = dataclasses.replace(ATTENTION_CALL, query_length=64, key_length=64)
    assert 64 * 64 < MIN_FRAME_ELEMENTS
    assert "batched matmul" in (onednn_attention_supports(small).reason or "")
    assert select("attention", "auto", small).name == "reference"


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"dropout_p": 0.1}, "dropout"),
        ({"dtype": torch.bfloat16}, "float32"),
        ({"device": torch.device("cuda")}, "CPU"),
        ({"query_length": 1}, "batched matmul"),
    ],
    ids=["dropout", "bf16", "cuda", "decoding-step"],
)
def test_attention_declines_with_a_reason(change: dict[str, Any], reason: str) -> None:
    call = dataclasses.replace(ATTENTION_CALL, **change)
    support = onednn_attention_supports(call)
    assert not support.ok and reason in support.reason
    with pytest.raises(KernelError, match="'onednn' cannot serve"):
        select("attention", "onednn", call)


def test_attention_dropout_while_training_raises() -> None:
    q = torch.zeros(1, 1, 4, 8)
    with pytest.raises(ValueError, match="dropout"):
        onednn_attention(q, q, q, None, None, attention_options(scale=1.0, dropout_p=0.1, training=True))


# --- a whole model ------------------------------------------------------------------------------


def test_fused_add_matches_addmm() -> None:
    assert fused_add_available().ok, fused_add_available().reason
    generator = torch.Generator().manual_seed(3)
    a, b, addend = (torch.randn(*shape, generator=generator) for shape in ((37, 19), (23, 19), (37, 23)))
    expected = torch.addmm(addend.double(), a.double(), b.double().t())
    torch.testing.assert_close(matmul_nt_add(a, b, addend).double(), expected, **FP32)


BIAS_LAYOUTS: Final = ["none", "contiguous", "transposed", "broadcast"]


def _slice_bias(layout: str, rows: int, keys: int, generator: torch.Generator) -> Tensor | None:
    if layout == "none":
        return None
    if layout == "contiguous":
        return torch.randn(rows, keys, generator=generator)
    if layout == "transposed":  # a strided view: the post-op is skipped, the bias is added in place
        return torch.randn(keys, rows, generator=generator).t()
    if layout == "broadcast":  # one row for every query (stride 0)
        return torch.randn(1, keys, generator=generator).expand(rows, keys)
    raise AssertionError(layout)


@pytest.mark.parametrize("fused_add", [True, False], ids=["post-op", "no-post-op"])
@pytest.mark.parametrize("bias_layout", BIAS_LAYOUTS)
@pytest.mark.parametrize(
    "causal,query_offset,padding",
    [
        (False, 0, "none"),
        (False, 0, "some"),
        (False, 0, "all"),
        (True, 0, "none"),
        (True, 5, "some"),
        (True, 0, "left"),
    ],
    ids=["plain", "padded", "all-padding", "causal", "causal-offset-padded", "causal-left-padding"],
)
def test_softmax_slice_in_place_matches_float64_reference(
    causal: bool, query_offset: int, padding: str, bias_layout: str, fused_add: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slice without autograd against the reference in float64: every mask (a frame of padding,
    queries that see no key), every bias layout, with and without oneDNN's add post-op."""
    if not fused_add:
        monkeypatch.setattr(attention_module, "fused_add_available", lambda: declined("switched off by the test"))
    post_ops: list[Tensor] = []
    real = attention_module.matmul_nt_add

    def spy(a: Tensor, b: Tensor, addend: Tensor) -> Tensor:
        post_ops.append(addend)
        return real(a, b, addend)

    monkeypatch.setattr(attention_module, "matmul_nt_add", spy)
    generator = torch.Generator().manual_seed(11)
    rows, keys = 19, 29
    query, key, value = (torch.randn(n, size, generator=generator) for n, size in ((rows, 8), (keys, 8), (keys, 12)))
    bias = _slice_bias(bias_layout, rows, keys, generator)
    key_mask = {
        "none": None,
        "some": torch.rand(keys, generator=generator) > 0.3,
        "all": torch.zeros(keys, dtype=torch.bool),
        "left": torch.arange(keys) >= 7,  # with a causal mask, the first 7 queries see no key
    }[padding]
    options = attention_options(causal=causal, query_offset=query_offset, need_weights=True)
    expected_out, expected_weights = reference_attention(
        *(t.double().view(1, 1, *t.shape) for t in (query, key, value)),
        None if bias is None else bias.double(),
        None if key_mask is None else key_mask.view(1, 1, keys),
        options,
    )
    with torch.inference_mode():
        out, weights = softmax_slice_in_place(query, key, value, bias, key_mask, options)
    assert out.shape == (rows, 12) and weights.shape == (rows, keys)
    torch.testing.assert_close(out.double(), expected_out.view(rows, 12), **FP32)
    torch.testing.assert_close(weights.double(), expected_weights.view(rows, keys), **FP32)
    assert len(post_ops) == int(fused_add and bias_layout == "contiguous")
    if padding == "left" and causal:
        assert weights[:7].abs().sum() == 0  # queries that see no key get zeros, not NaN


@pytest.mark.parametrize("chunk_size", [None, 128], ids=["unchunked", "chunk128"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_whole_model_onednn_matches_forced_reference_with_gradients(
    causal: bool, chunk_size: int | None, monkeypatch: pytest.MonkeyPatch, onednn_gemms: list[Tensor]
) -> None:
    """Every projection and (frames of >= 128 x 128) attention in oneDNN, against the reference
    modules on all-reference kernels (same weights)."""
    config = tiny_config(
        bidirectional=not causal,
        is_decoder=causal,
        use_chunking=chunk_size is not None,
        chunk_size=chunk_size or -1,
        max_positions=512,
    )
    torch.manual_seed(0)
    model = accelerated(MegaBackbone(config))
    reference_model = reference_copy(model)
    tokens = torch.randint(3, 50, (2, 300))
    mask = torch.ones(2, 300, dtype=torch.bool)
    mask[1, 250:] = False

    def run(network: nn.Module) -> tuple[Tensor, list[Tensor]]:
        network.zero_grad()
        hidden = network(tokens, attention_mask=mask).hidden
        (hidden * torch.linspace(-1, 1, hidden.shape[-1])).sum().backward()
        return hidden.detach(), [p.grad.clone() for p in network.parameters() if p.grad is not None]

    chosen = record_kernel_choices(monkeypatch)
    fast, fast_grads = run(model)
    assert "attention/onednn" in chosen
    projections = {id(module.weight) for module in model.modules() if isinstance(module, nn.Linear)}
    assert len(projections) == 10 and {id(weight) for weight in onednn_gemms} == projections
    for op in ("ATTENTION", "EMA"):
        monkeypatch.setenv(f"MEGA_PLUGIN_KERNEL_{op}", "reference")
    chosen.clear()
    onednn_gemms.clear()
    reference, reference_grads = run(reference_model)
    assert set(chosen) == {"ema/reference", "attention/reference"} and onednn_gemms == []
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)
    assert len(fast_grads) == len(reference_grads)
    for got, expected in zip(fast_grads, reference_grads):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("shape", [(0, 1, 256, 256), (2, 1, 0, 256)], ids=["no-sequences", "no-queries"])
def test_attention_of_empty_inputs_is_empty(shape: tuple[int, int, int, int]) -> None:
    batch, chunks, query_length, key_length = shape
    query = torch.randn(batch, chunks, query_length, 8, requires_grad=True)
    key = torch.randn(batch, chunks, key_length, 8)
    value = torch.randn(batch, chunks, key_length, 12)
    out, weights = onednn_attention(
        query, key, value, None, None, attention_options(causal=True, scale=1.0, need_weights=True)
    )
    assert out.shape == (batch, chunks, query_length, 12) and weights.shape == (batch, chunks, query_length, key_length)


def test_torch_func_transforms_keep_torch_ops(onednn_gemms: list[Tensor]) -> None:
    """``torch.func.grad`` through a whole accelerated model and ``vmap`` over a projection: the oneDNN
    Function has no functorch rules, so oneDNN must decline under the transforms."""
    model = accelerated(MegaBackbone(tiny_config(use_chunking=True, chunk_size=128, max_positions=512)).eval())
    tokens = torch.randint(3, 50, (2, 160))

    def loss(parameters: dict[str, Tensor]) -> Tensor:
        return torch.func.functional_call(model, parameters, (tokens,)).hidden.square().mean()

    grads = torch.func.grad(loss)({name: p.detach() for name, p in model.named_parameters()})
    assert onednn_gemms == []
    model.zero_grad()
    loss(dict(model.named_parameters())).backward()
    assert onednn_gemms, "outside the transform the projections run in oneDNN"
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(grads[name], parameter.grad, rtol=1e-4, atol=1e-6, msg=name)
    module = fast_linear(8, 6)
    batches = torch.randn(3, MIN_ROWS, 8)
    onednn_gemms.clear()
    batched = torch.func.vmap(module)(batches)
    assert onednn_gemms == []
    torch.testing.assert_close(batched, module(batches), **FP32)


def test_forward_mode_ad_keeps_torch_ops(onednn_gemms: list[Tensor]) -> None:
    """Inside ``torch.autograd.forward_ad.dual_level`` the projections carry tangents."""
    import torch.autograd.forward_ad as forward_ad

    module = fast_linear(8, 6)
    x, tangent = torch.randn(MIN_ROWS, 8), torch.randn(MIN_ROWS, 8)
    with forward_ad.dual_level():
        out = module(forward_ad.make_dual(x, tangent))
        primal, derivative = forward_ad.unpack_dual(out)
    assert onednn_gemms == []
    torch.testing.assert_close(primal, module(x), **FP32)
    torch.testing.assert_close(derivative, tangent @ module.weight.detach().T, **FP32)
