"""``static_decoder(model)``: a HF ``MegaForCausalLM`` decoded by the backends' :class:`StaticDecoder`.

Glue only: the decoder is built from the model's own embedding, layers and final norm, and the
head is the model's own (``lm_head`` after the optional ``dense`` + tanh, or the adaptive softmax,
whose log-probabilities are the model's logits), so the tokens equal ``model.generate``'s greedy
tokens.
"""

from __future__ import annotations

from torch import Tensor

from ...backends.static_decoding import Head, StaticDecoder
from ...backends.token_step.weights import Projection
from ...core.heads import tanh_dense
from .modeling_lm import MegaForCausalLM


def causal_lm_head(model: MegaForCausalLM) -> Head:
    """``model``'s head as a function of the last hidden states (B, D) -> logits (B, vocabulary)."""
    dense = None if model.dense is None else Projection.of(model.dense)
    if model.adaptive_softmax is not None:
        adaptive_softmax, tied = model.adaptive_softmax, model.tied_adaptive_input()

        def adaptive_head(hidden: Tensor) -> Tensor:
            return adaptive_softmax.log_probs(tanh_dense(hidden, dense), tied_input=tied)

        return adaptive_head
    lm_head = Projection.of(model.lm_head)  # the layers' projections' form: few rows on two cores
    return lambda hidden: lm_head(tanh_dense(hidden, dense))


def static_decoder(model: MegaForCausalLM, *, max_length: int | None = None, compile: bool = False) -> StaticDecoder:
    """A :class:`StaticDecoder` over ``model`` (in eval mode): ``decoder.greedy(ids, max_new_tokens=n)``.

    ``max_length`` (prompt + new tokens) is needed only without chunking; ``compile=True`` runs
    each step as one ``torch.compile`` graph. The decoder reads the weights now: build a new one,
    or call ``decoder.refresh()``, after changing them.
    """
    if not isinstance(model, MegaForCausalLM):
        raise TypeError(f"static_decoder takes a MegaForCausalLM, got {type(model).__name__}")
    return StaticDecoder(
        model.mega.embedding_layer,
        model.mega.layers,
        head=causal_lm_head(model),
        final_norm=model.mega.final_norm,
        max_length=max_length,
        compile=compile,
    )


__all__ = ["causal_lm_head", "static_decoder"]
