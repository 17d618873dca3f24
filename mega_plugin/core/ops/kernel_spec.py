"""What a kernel is: :class:`KernelSpec`, one implementation of one op, as the registry keeps it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .calls import SUPPORTED, Support, declined


def _always() -> Support:
    return SUPPORTED


def _accepts_every_call(call: Any) -> Support:
    return SUPPORTED


@dataclass(frozen=True)
class KernelSpec:
    """One kernel implementation of one op."""

    name: str
    """Unique within the op, e.g. ``"reference"``, ``"chunked_scan"``."""

    op: str
    """``"ema"`` or ``"attention"``."""

    fn: Callable[..., Any]
    """The implementation; takes the op's call (see :mod:`.calls`)."""

    priority: int = 0
    """``auto`` tries higher priorities first; the reference kernel has 0."""

    is_available: Callable[[], Support] = field(default=_always)
    """Whether the kernel can run on this machine at all (checked when choosing)."""

    supports: Callable[[Any], Support] = field(default=_accepts_every_call)
    """Whether it accepts a given call (an :class:`~.calls.EmaCall` / :class:`~.calls.AttentionCall`)."""

    guard: Callable[[], Support] | None = None
    """Checked on every call, for state outside the call that may change (autocast, tracing)."""

    description: str = ""
    """One line shown by ``mega-plugin info``."""

    source: str = "mega-plugin"
    """Distribution that registered it."""


def as_support(answer: Support | str | None) -> Support:
    """A check's answer as a :class:`Support` (plugins may answer ``None`` or a reason string)."""
    if isinstance(answer, Support):
        return answer
    return SUPPORTED if answer is None else declined(str(answer))
