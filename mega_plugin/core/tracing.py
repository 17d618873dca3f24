"""Whether torch is capturing a graph of the call instead of running it.

Graph capture (``torch.compile``, ``torch.export``, the ONNX exporters built on them, TorchScript
tracing and ``torch.fx`` symbolic tracing) runs the Python code once over symbolic or fake
tensors. Two kinds of code must then step aside:

* **value checks** such as ``int(ids.min())``, ``bool(mask.all())`` or ``torch.equal``: they read
  tensor *values*, which a graph does not have (export fails on them, ``torch.compile`` breaks
  the graph). Eager calls keep them and their clear errors; a captured graph skips them, so its
  caller owns the validity of its inputs (the exported graph has no data-dependent branch);
* **fast paths** that use private ops, in-place writes into shared buffers or value-keyed memo
  caches: the kernel registry hands out the reference kernels, and the backends' fast modules
  run the core's ``forward``.

Everything else (shape checks, dtype checks, config checks) runs as in eager: it depends only on
what a graph is specialised on.
"""

from __future__ import annotations

import torch
from torch.fx._symbolic_trace import is_fx_symbolic_tracing


def capturing_graph() -> bool:
    """True while ``torch.compile``/dynamo, ``torch.export`` (strict or not), TorchScript
    (tracing, scripting, the TorchScript ONNX exporter) or ``torch.fx.symbolic_trace`` runs the code.

    Cheap (a few flag reads) and constant-folded by dynamo, so it may be asked on every call.
    """
    # dynamo folds is_compiling() to True inside a compiled or strictly exported frame; non-strict
    # export sets it (and is_exporting) around its whole trace
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return True
    return torch.jit.is_tracing() or torch.jit.is_scripting() or is_fx_symbolic_tracing()
