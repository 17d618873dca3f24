"""The one-token step of a causal MEGA block: one new token per row against its streaming state.

* :mod:`.step`: the arithmetic (the recurrent EMA, the gates, one query row of the reference
  attention, the gated residual, the NFFN), as the core computes it for a single query;
* :mod:`.weights`: what a step reads, in the step's form (fp32 EMA coefficients, the frame's
  bias table, :class:`~.weights.Projection`: few-row products split over two cores);
* :mod:`.buffers`: the state it advances in place (the EMA state, the frame's keys and values).

Two decoders run it: the static decoder (:mod:`~mega_plugin.backends.static_decoding`, fixed
buffers, optionally compiled) and ``cpu_fast``'s decoding step inside ``generate()``
(:mod:`~mega_plugin.backends.cpu_fast.decode_step`, on the layer's own growing state). Plain
torch, any device; it imports neither of them.
"""
