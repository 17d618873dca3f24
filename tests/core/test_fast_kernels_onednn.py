"""The ``onednn`` linear and attention kernels against float64 ground truth and the reference kernels.

oneDNN's GEMMs differ from MKL's in summation order only, so every comparison is made against
float64 arithmetic on the same fp32 inputs (outputs and gradients), with fp32 rounding as
the tolerance. The dispatch tests check which kernel serves which call, and that wrappers,
hooks, autocast and ``torch.backends.mkldnn.flags(enabled=False)`` keep torch's own ops.
"""

from __future__ import annotations

from typing import Any, Callable, Final

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mega_plugin.core.dense import project
from mega_plugin.core.kernels import (
    KernelError,
    onednn_attention,
    onednn_linear,
    resolve_kernel,
)
from mega_plugin.core.kernels.attention_onednn import MIN_FRAME_ELEMENTS, onednn_attention_supports
from mega_plugin.core.kernels.linear import MIN_ROWS
from mega_plugin.core.kernels.onednn import matmul_nt, onednn_unavailable, unsupported_tensor
from mega_plugin.core.stack import MegaBackbone

from .helpers import in_float64, tiny_config, with_grads

pytestmark = pytest.mark.skipif(onednn_unavailable() is not None, reason=f"oneDNN: {onednn_unavailable()}")

FP32: Final = dict(rtol=2e-5, atol=2e-5)


# --- linear -----------------------------------------------------------------------------------


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


@pytest.mark.parametrize("layout", ["2d", "3d", "transposed", "sliced"])
@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("shape", [(37, 19, 23), (1, 5, 3), (300, 256, 1088)], ids=["odd", "one-row", "mx-proj"])
def test_linear_matches_float64_outputs_and_gradients(shape: tuple[int, int, int], has_bias: bool, layout: str) -> None:
    rows, features, outputs = shape
    generator = torch.Generator().manual_seed(rows * 7 + outputs)
    x = _input(layout, rows, features, generator).requires_grad_()
    weight = torch.randn(outputs, features, generator=generator).requires_grad_()
    bias = torch.randn(outputs, generator=generator).requires_grad_() if has_bias else None
    expected, expected_grads = in_float64(F.linear, x, weight, bias)
    got, got_grads = with_grads(onednn_linear, x, weight, bias)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    scale = 1 + features**0.5
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5 * scale)
    for name, g, e in zip(["input", "weight", "bias"], got_grads, expected_grads):
        torch.testing.assert_close(g.double(), e, rtol=1e-5, atol=1e-5 * scale * rows**0.5, msg=name)


def test_linear_gradient_of_a_broadcast_upstream() -> None:
    """``.sum().backward()`` hands a stride-0 gradient to the backward GEMMs."""
    x = torch.randn(6, 4).requires_grad_()
    weight = torch.randn(5, 4).requires_grad_()
    onednn_linear(x, weight, None).sum().backward()
    torch.testing.assert_close(x.grad, weight.sum(0).expand(6, 4), **FP32)
    torch.testing.assert_close(weight.grad, x.sum(0).expand(5, 4), **FP32)


def test_linear_double_backward() -> None:
    """Under ``create_graph`` the backward is differentiable (gradient penalties, Hessian-vector products)."""
    x = torch.randn(4, 3, dtype=torch.float32, requires_grad=True)
    weight = torch.randn(2, 3, requires_grad=True)
    (grad_x,) = torch.autograd.grad(onednn_linear(x, weight, None).square().sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(grad_x.sum(), weight)
    x64, w64 = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    (g64,) = torch.autograd.grad(F.linear(x64, w64).square().sum(), x64, create_graph=True)
    (second64,) = torch.autograd.grad(g64.sum(), w64)
    torch.testing.assert_close(second.double(), second64, **FP32)


def test_matmul_nt_without_grad_records_nothing() -> None:
    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(5, 4)
    with torch.no_grad():
        out = matmul_nt(a, b)
    assert out.grad_fn is None and not out.requires_grad


# --- which linear kernel serves a projection ----------------------------------------------------


def linear_choice(module: nn.Linear, x: Tensor) -> str:
    call = {
        "device": x.device,
        "dtype": x.dtype,
        "rows": x.numel() // x.shape[-1],
        "operand_issue": unsupported_tensor(x) or unsupported_tensor(module.weight) or unsupported_tensor(module.bias),
    }
    return resolve_kernel("linear", "auto", call).name


def test_auto_picks_onednn_for_fp32_cpu_projections() -> None:
    module = nn.Linear(8, 6)
    x = torch.randn(2, MIN_ROWS, 8)
    assert linear_choice(module, x) == "onednn"
    torch.testing.assert_close(project(module, x), module(x), **FP32)


def test_decoding_steps_keep_torch_ops() -> None:
    """Fewer than MIN_ROWS rows (a decoding step) stay on F.linear: MKL's GEMV has less overhead."""
    module = nn.Linear(8, 6)
    step = torch.randn(1, 1, 8)
    assert linear_choice(module, step) == "reference"
    assert linear_choice(module, torch.randn(MIN_ROWS - 1, 8)) == "reference"
    assert torch.equal(project(module, step), module(step))


@pytest.mark.parametrize(
    "context,reason",
    [
        (lambda: torch.backends.mkldnn.flags(enabled=False), "disabled"),
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16), "autocast"),
    ],
    ids=["mkldnn-off", "autocast"],
)
def test_contexts_that_keep_torch_ops(context: Callable[[], Any], reason: str) -> None:
    module = nn.Linear(8, 6)
    x = torch.randn(2, MIN_ROWS, 8)
    call = {"device": x.device, "dtype": x.dtype, "rows": MIN_ROWS, "operand_issue": None}
    with context():
        assert resolve_kernel("linear", "auto", call).name == "reference"
        with pytest.raises(KernelError, match=reason):
            resolve_kernel("linear", "onednn", call)
        out = project(module, x)
        expected = module(x)
    assert out.dtype == expected.dtype  # bf16 under autocast, as nn.Linear gives
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes_keep_torch_ops(dtype: torch.dtype) -> None:
    module = nn.Linear(8, 6).to(dtype)
    x = torch.randn(MIN_ROWS, 8, dtype=dtype)
    assert linear_choice(module, x) == "reference"
    assert torch.equal(project(module, x), module(x))


def test_env_override_forces_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_LINEAR", "reference")
    module = nn.Linear(8, 6)
    x = torch.randn(MIN_ROWS, 8)
    assert linear_choice(module, x) == "reference"
    assert torch.equal(project(module, x), F.linear(x, module.weight, module.bias))


def test_wrappers_and_hooks_see_every_call() -> None:
    """A subclass (PEFT/LoRA-style wrapper) or a module with hooks is called, not bypassed."""

    class Scaled(nn.Linear):
        def forward(self, x: Tensor) -> Tensor:
            return 2 * super().forward(x)

    wrapped = Scaled(8, 6)
    x = torch.randn(MIN_ROWS, 8)
    torch.testing.assert_close(project(wrapped, x), 2 * F.linear(x, wrapped.weight, wrapped.bias))
    plain = nn.Linear(8, 6)
    calls: list[int] = []
    handle = plain.register_forward_hook(lambda module, args, out: calls.append(1))
    project(plain, x)
    handle.remove()
    project(plain, x)
    assert calls == [1]


def test_broadcast_operands_are_declined() -> None:
    x = torch.randn(1, 8).expand(MIN_ROWS, 8)
    assert unsupported_tensor(x) is not None
    assert linear_choice(nn.Linear(8, 6), x) == "reference"


# --- attention (outputs and gradients: test_fast_kernels_query_blocks.py) -----------------------


ATTENTION_CALL: Final = {
    "activation": "softmax",
    "causal": False,
    "query_length": 256,
    "key_length": 256,
    "num_chunks": 8,
    "need_weights": False,
    "has_key_mask": True,
    "dropout_p": 0.0,
    "dtype": torch.float32,
    "device": torch.device("cpu"),
}


def test_auto_picks_onednn_for_cpu_frames_of_chunk_size_128_and_more() -> None:
    assert resolve_kernel("attention", "auto", ATTENTION_CALL).name == "onednn"
    small = {**ATTENTION_CALL, "query_length": 64, "key_length": 64}
    assert 64 * 64 < MIN_FRAME_ELEMENTS
    assert "batched matmul" in (onednn_attention_supports(small) or "")
    assert resolve_kernel("attention", "auto", small).name == "reference"


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
    call = {**ATTENTION_CALL, **change}
    declined = onednn_attention_supports(call)
    assert declined is not None and reason in declined
    with pytest.raises(KernelError, match="'onednn' cannot serve"):
        resolve_kernel("attention", "onednn", call)


def test_attention_dropout_while_training_raises() -> None:
    q = torch.zeros(1, 1, 4, 8)
    with pytest.raises(ValueError, match="dropout"):
        onednn_attention(
            q, q, q, None, None, activation="softmax", causal=False, query_offset=0, scale=1.0,
            dropout_p=0.1, training=True, need_weights=False,
        )


# --- a whole model ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 128], ids=["unchunked", "chunk128"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_whole_model_onednn_matches_forced_reference_with_gradients(
    causal: bool, chunk_size: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every projection and (frames of >= 128 x 128) attention in oneDNN, against all-reference kernels."""
    config = tiny_config(
        bidirectional=not causal,
        is_decoder=causal,
        use_chunking=chunk_size is not None,
        chunk_size=chunk_size or -1,
        max_positions=512,
    )
    torch.manual_seed(0)
    model = MegaBackbone(config)
    tokens = torch.randint(3, 50, (2, 300))
    mask = torch.ones(2, 300, dtype=torch.bool)
    mask[1, 250:] = False

    def run() -> tuple[Tensor, list[Tensor]]:
        model.zero_grad()
        hidden = model(tokens, attention_mask=mask).hidden
        (hidden * torch.linspace(-1, 1, hidden.shape[-1])).sum().backward()
        return hidden.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    chosen: list[str] = []
    original = resolve_kernel

    def spy(op: str, requested: str, call: Any) -> Any:
        spec = original(op, requested, call)
        chosen.append(f"{op}/{spec.name}")
        return spec

    monkeypatch.setattr("mega_plugin.core.dense.resolve_kernel", spy)
    monkeypatch.setattr("mega_plugin.core.attention_dispatch.resolve_kernel", spy)
    fast, fast_grads = run()
    assert "linear/onednn" in chosen and "attention/onednn" in chosen
    for op in ("ATTENTION", "EMA", "LINEAR"):
        monkeypatch.setenv(f"MEGA_PLUGIN_KERNEL_{op}", "reference")
    chosen.clear()
    reference, reference_grads = run()
    assert set(chosen) == {"linear/reference", "attention/reference"}
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
        query, key, value, None, None, activation="softmax", causal=True, query_offset=0, scale=1.0,
        dropout_p=0.0, training=False, need_weights=True,
    )
    assert out.shape == (batch, chunks, query_length, 12) and weights.shape == (batch, chunks, query_length, key_length)


def test_torch_func_transforms_keep_torch_ops() -> None:
    """``torch.func.grad`` through a whole model and ``vmap`` over a projection: the oneDNN
    Function has no functorch rules, so every kernel must decline under the transforms."""
    model = MegaBackbone(tiny_config(use_chunking=True, chunk_size=128, max_positions=512)).eval()
    tokens = torch.randint(3, 50, (2, 160))

    def loss(parameters: dict[str, Tensor]) -> Tensor:
        return torch.func.functional_call(model, parameters, (tokens,)).hidden.square().mean()

    grads = torch.func.grad(loss)({name: p.detach() for name, p in model.named_parameters()})
    model.zero_grad()
    loss(dict(model.named_parameters())).backward()
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(grads[name], parameter.grad, rtol=1e-4, atol=1e-6, msg=name)
    module = nn.Linear(8, 6)
    batches = torch.randn(3, MIN_ROWS, 8)
    batched = torch.func.vmap(lambda rows: project(module, rows))(batches)
    torch.testing.assert_close(batched, module(batches), **FP32)


def test_forward_mode_ad_keeps_torch_ops() -> None:
    """Inside ``torch.autograd.forward_ad.dual_level`` the projections carry tangents."""
    import torch.autograd.forward_ad as forward_ad

    module = nn.Linear(8, 6)
    x, tangent = torch.randn(MIN_ROWS, 8), torch.randn(MIN_ROWS, 8)
    with forward_ad.dual_level():
        out = project(module, forward_ad.make_dual(x, tangent))
        primal, derivative = forward_ad.unpack_dual(out)
    torch.testing.assert_close(primal, module(x), **FP32)
    torch.testing.assert_close(derivative, tangent @ module.weight.detach().T, **FP32)
