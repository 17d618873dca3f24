"""Reading a training checkpoint file safely: ``torch.load(weights_only=True)`` plus, by name, the
few non-tensor objects fairseq checkpoints hold.

fairseq writes its arguments as an ``argparse.Namespace`` and, in ``extra_state`` and the
optimizer history, numpy scalars (the reconstructor ``numpy.core.multiarray.scalar``, spelled
``numpy._core`` from numpy 2, and ``numpy.dtype`` with its concrete dtype classes). Those are
allowed; anything else a pickle names is still refused, and only ``trust=True`` unpickles
everything. Every error names the file.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any


def safe_checkpoint_globals() -> list[Any]:
    """The objects ``torch.load(weights_only=True)`` may build besides tensors and containers."""
    allowed: list[Any] = [argparse.Namespace]
    try:
        import numpy as np
    except ImportError:  # no numpy, no numpy scalars in what torch can read here
        return allowed
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    allowed += [core.multiarray.scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: one class per dtype, pickled by name
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


def load_checkpoint(path: Path, *, trust: bool = False) -> Any:
    """``torch.load`` of ``path`` on the CPU, with :func:`safe_checkpoint_globals` (``weights_only``)
    unless ``trust``. A file that cannot be read raises ``ValueError`` naming it."""
    import torch

    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file" if not path.exists() else f"{path}: not a file")
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(safe_checkpoint_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        if trust:
            raise ValueError(f"{path}: cannot be unpickled ({first})") from error
        raise ValueError(
            f"{path}: weights_only loading refused an object in the checkpoint ({first}). "
            "If you trust the file, pass --trust-checkpoint."
        ) from error
    except (RuntimeError, EOFError, OSError, AttributeError, ImportError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: cannot be read as a torch checkpoint (truncated or not one?): {detail}") from error
