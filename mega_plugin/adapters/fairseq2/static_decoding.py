"""``static_decoder(model)``: a fairseq2 ``MegaCausalLM`` decoded by the backends' :class:`StaticDecoder`.

Glue only: the model's ``decoder_frontend`` embeds, its ``decoder.layers`` and ``decoder.final_norm``
run, and its own head (``head`` transform, then ``project``: the final projection or the adaptive
softmax) gives the logits, so each step's logits equal the model's forward at that position.
"""

from __future__ import annotations

from torch import Tensor

from ...backends.static_decoding import StaticDecoder
from .model import MegaCausalLM


def static_decoder(model: MegaCausalLM, *, max_length: int | None = None, compile: bool = False) -> StaticDecoder:
    """A :class:`StaticDecoder` over ``model`` (in eval mode): ``decoder.greedy(seqs, max_new_tokens=n)``.

    ``max_length`` (prompt + new tokens) is needed only without chunking; ``compile=True`` runs
    each step as one ``torch.compile`` graph. Rebuild, or ``decoder.refresh()``, after changing weights.
    """
    if not isinstance(model, MegaCausalLM):
        raise TypeError(f"static_decoder takes a mega_plugin MegaCausalLM, got {type(model).__name__}")

    def head(hidden: Tensor) -> Tensor:
        return model.project(model.head(hidden))

    return StaticDecoder(
        model.decoder_frontend,
        model.decoder.layers,
        head=head,
        final_norm=model.decoder.final_norm,
        max_length=max_length,
        compile=compile,
    )


__all__ = ["static_decoder"]
