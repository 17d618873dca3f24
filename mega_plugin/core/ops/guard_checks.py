"""What the call-time guard (:mod:`.guard`) checks: call signatures and the outputs a call requires.

* :func:`signature`: the guard's key of a call: dtype, device, the options, and the sizes that
  may send a kernel down another path (one step / one query, queries == keys, several
  chunks, a key mask, a state), never the lengths themselves; the same key is computed from
  a kernel's arguments (:data:`ARGS_SIGNATURES`) as ``run_ema`` / ``run_attention`` build the call;
* :func:`output_problem`: the result's structure, device, shapes and dtypes against the call (from the
  op's conventions, :mod:`.conventions`), with no kernel run;
* :func:`finiteness_problem`: NaN or inf where the reference kernel's result is finite.
"""

from __future__ import annotations

from typing import Any, Callable, Final, Hashable

import torch
from torch import Tensor

from .calls import AttentionCall, EmaCall


def ema_signature(call: EmaCall) -> Hashable:
    """What an EMA kernel may branch on: options, a state, one step or many, dtype, device."""
    return (call.bidirectional, call.truncation, call.has_state, call.length == 1, call.dtype, call.device)


def attention_signature(call: AttentionCall) -> Hashable:
    """What an attention kernel may branch on: options, masks, decoding, square or chunked frames."""
    return (
        call.activation, call.causal, call.need_weights, call.has_key_mask, call.dropout_p, call.num_chunks > 1,
        call.query_length == 1, call.query_length == call.key_length, call.dtype, call.device,
    )  # fmt: skip


def _ema_args_signature(x: Tensor, coefficients: Any, initial_state: Tensor | None, options: Any) -> Hashable:
    """:func:`ema_signature` of the call ``run_ema`` builds from these arguments."""
    has_state = initial_state is not None or options.return_state
    return (options.bidirectional, options.truncation, has_state, x.shape[1] == 1, x.dtype, x.device)


def _attention_args_signature(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, key_mask: Tensor | None, options: Any
) -> Hashable:
    """:func:`attention_signature` of the call ``run_attention`` builds from these arguments."""
    queries, keys = query.shape[-2], key.shape[-2]
    return (
        options.activation, options.causal, options.need_weights, key_mask is not None, options.dropout_p,
        query.shape[1] > 1, queries == 1, queries == keys, query.dtype, query.device,
    )  # fmt: skip


CALL_SIGNATURES: Final[dict[str, Callable[[Any], Hashable]]] = {
    "ema": ema_signature,
    "attention": attention_signature,
}
ARGS_SIGNATURES: Final[dict[str, Callable[..., Hashable]]] = {
    "ema": _ema_args_signature,
    "attention": _attention_args_signature,
}


def signature(op: str, call: EmaCall | AttentionCall) -> Hashable:
    """The guard's key of ``call``: calls with one key are proven (or rejected) together."""
    return CALL_SIGNATURES[op](call)


def _allowed_dtypes(device: torch.device, *dtypes: torch.dtype) -> set[torch.dtype]:
    """``dtypes``, plus the autocast dtype of ``device`` while autocast is on (the reference's matmuls follow it)."""
    allowed = set(dtypes)
    if torch.is_autocast_enabled(device.type):
        allowed.add(torch.get_autocast_dtype(device.type))
    return allowed


def _expected(op: str, args: tuple[Any, ...]) -> list[tuple[str, tuple[int, ...], set[torch.dtype]] | None]:
    """Per output (name, shape, allowed dtypes), or None where the output is not asked for."""
    if op == "ema":
        x, coefficients, _, options = args
        batch, _, dim = x.shape
        state = (batch, dim, coefficients.input_gain.shape[-1])  # (B, D, N)
        float32 = {torch.float32}
        return [("output", tuple(x.shape), float32), ("state", state, float32) if options.return_state else None]
    query, key, value, _, _, options = args
    dtypes = _allowed_dtypes(query.device, value.dtype, query.dtype)
    output = (*query.shape[:-1], value.shape[-1])  # (B, C, Lq, V)
    weights = (*query.shape[:-1], key.shape[-2])  # (B, C, Lq, Lk)
    return [("output", output, dtypes), ("weights", weights, dtypes) if options.need_weights else None]


def output_problem(op: str, args: tuple[Any, ...], result: Any) -> str | None:
    """Why ``result`` is not what the call ``args`` requires (structure, device, shape, dtype), or None."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return f"returned {type(result).__name__}, expected a pair (output, {'state' if op == 'ema' else 'weights'})"
    for expected, got in zip(_expected(op, args), result):
        if expected is None:
            continue
        name, shape, dtypes = expected
        if not isinstance(got, Tensor):
            return f"returned {type(got).__name__} as its {name}, expected a tensor of shape {shape}"
        if got.device != args[0].device:
            return f"returned {name} on device {got.device}, expected {args[0].device} (the inputs' device)"
        if tuple(got.shape) != shape:
            return f"returned {name} of shape {tuple(got.shape)}, expected {shape}"
        if got.dtype not in dtypes:
            allowed = " or ".join(sorted(str(d) for d in dtypes))
            return f"returned {name} of dtype {got.dtype}, expected {allowed}"
    return None


def finiteness_problem(op: str, args: tuple[Any, ...], result: Any, reference: Any) -> str | None:
    """Where ``result`` has NaN or inf and ``reference`` is finite, or None (one device sync)."""
    for expected, got, truth in zip(_expected(op, args), result, reference):
        if expected is None or not isinstance(truth, Tensor):
            continue
        broken = torch.isfinite(truth) & ~torch.isfinite(got)
        count = int(broken.sum())
        if count:
            return f"returned NaN or inf at {count} of {broken.numel()} {expected[0]} values where the reference is finite"
    return None
