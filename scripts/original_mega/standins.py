"""Small stand-ins for the fairseq framework pieces the original MEGA model files import.

The original facebookresearch/mega snapshot is a fairseq 0.9 fork whose package ``__init__``
pulls in data loaders, compiled extensions, hydra-less option parsing and dozens of other
models. The fixture generator only needs the MEGA model/module files, so it installs a
synthetic ``fairseq`` package into ``sys.modules``:

* ``fairseq`` / ``fairseq.utils`` / ``fairseq.options`` / ``fairseq.incremental_decoding_utils``:
  written here (activation functions, the attention functions' formulas, ``eval_str_list``,
  the per-module incremental-state keys);
* ``fairseq.models`` and ``fairseq.modules``: packages whose ``__path__`` is the snapshot's own
  directory, so every ``fairseq.modules.<x>`` submodule is the ORIGINAL file, while the
  package namespace itself (the names ``from fairseq.modules import X`` asks for) resolves
  lazily through :data:`MODULE_HOMES`; the model base classes and registries are written here;
* modules for non-MEGA encoders the LRA model file imports (transformer, luna, lstm, flash)
  are empty placeholders: building them raises.

Nothing of the original is copied: the snapshot directory is only put on the import path.
"""

from __future__ import annotations

import math
import sys
import types
import uuid
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODULE_HOMES: dict[str, str] = {
    "AdaptiveInput": "adaptive_input",
    "AdaptiveSoftmax": "adaptive_softmax",
    "FairseqDropout": "fairseq_dropout",
    "FairseqFeatureDropout": "fairseq_dropout",
    "LayerDropModuleList": "layer_drop",
    "LayerNorm": "layer_norm",
    "Fp32LayerNorm": "layer_norm",
    "ScaleNorm": "scale_norm",
    "RMSNorm": "root_mean_square_norm",
    "SequenceNorm": "sequence_norm",
    "RealNumberEmbedding": "real_number_embedding",
    "SimpleRelativePositionalBias": "relative_positional_bias",
    "RotaryRelativePositionalBias": "relative_positional_bias",
    "MultiHeadEMA": "exponential_moving_average",
    "MovingAverageGatedAttention": "moving_average_gated_attention",
    "GatedCrossAttention": "gated_cross_attention",
    "NormalizedFeedForwardNetwork": "normalized_feedforward_network",
    "MegaSentenceEncoderLayer": "mega_sentence_encoder_layer",
    "MegaEncoderLayer": "mega_layer",
    "MegaDecoderLayer": "mega_layer",
}
"""Name exported by the original ``fairseq.modules`` -> the original submodule defining it."""

MODELS: dict[str, type] = {}
ARCHITECTURES: dict[str, tuple[str, Callable[[Any], None]]] = {}
"""Filled by the original files' ``@register_model`` / ``@register_model_architecture``."""


# ---- fairseq.utils -----------------------------------------------------------------------

def _relu2(x: Tensor, onnx_trace: bool = False) -> Tensor:
    # squared ReLU attention
    return torch.square(F.relu(x.float() if onnx_trace else x))


def _laplace(x: Tensor, mu: float = 0.707107, sigma: float = 0.282095, onnx_trace: bool = False) -> Tensor:
    # Laplace attention function: the normal CDF at (x - mu) / sigma, mu = sqrt(1/2), sigma = sqrt(1/(4 pi))
    if onnx_trace:
        x = x.float()
    return 0.5 * (1.0 + torch.erf((x - mu) / (sigma * math.sqrt(2.0))))


def _softmax(x: Tensor, dim: int, onnx_trace: bool = False) -> Tensor:
    return F.softmax(x.float(), dim=dim) if onnx_trace else F.softmax(x, dim=dim, dtype=torch.float32)


def _log_softmax(x: Tensor, dim: int, onnx_trace: bool = False) -> Tensor:
    return F.log_softmax(x.float(), dim=dim) if onnx_trace else F.log_softmax(x, dim=dim, dtype=torch.float32)


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": lambda x: F.gelu(x.float()).type_as(x),
    "gelu_accurate": lambda x: F.gelu(x.float(), approximate="tanh").type_as(x),
    "silu": F.silu,
    "linear": lambda x: x,
}


def _get_activation_fn(activation: str) -> Callable[[Tensor], Tensor]:
    if activation not in _ACTIVATIONS:
        raise RuntimeError(f"--activation-fn {activation} not supported by the stand-in")
    return _ACTIVATIONS[activation]


def _fill_with_neg_inf(t: Tensor) -> Tensor:
    return t.float().fill_(float("-inf")).type_as(t)


def _unused(*_: Any, **__: Any) -> Any:
    raise NotImplementedError("not needed by the fixture generator (pretrained embedding files)")


# ---- fairseq.options ---------------------------------------------------------------------

def _eval_str_list(x: Any, type: type = float) -> Optional[list]:
    """'20000,60000' -> [20000, 60000] (a single number -> a one-element list)."""
    if x is None:
        return None
    if isinstance(x, str):
        x = [part for part in x.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(",") if part.strip()]
    try:
        return [type(v) for v in x]
    except TypeError:
        return [type(x)]


# ---- fairseq.incremental_decoding_utils --------------------------------------------------

class IncrementalStateOwner:
    """Gives each module a unique prefix for its entries in the shared incremental-state dict."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_incremental_state()

    def init_incremental_state(self) -> None:
        self._incremental_state_id = str(uuid.uuid4())

    def _full_key(self, key: str) -> str:
        return f"{self._incremental_state_id}.{key}"

    def get_incremental_state(self, incremental_state: Optional[dict], key: str) -> Optional[dict]:
        if incremental_state is None:
            return None
        return incremental_state.get(self._full_key(key))

    def set_incremental_state(self, incremental_state: Optional[dict], key: str, value: dict) -> Optional[dict]:
        if incremental_state is not None:
            incremental_state[self._full_key(key)] = value
        return incremental_state


def _with_incremental_state(cls: type) -> type:
    cls.__bases__ = (IncrementalStateOwner,) + tuple(b for b in cls.__bases__ if b is not IncrementalStateOwner)
    return cls


# ---- fairseq.models ----------------------------------------------------------------------

class EncoderOut(NamedTuple):
    encoder_out: Tensor  # T x B x C
    encoder_padding_mask: Optional[Tensor]  # B x T
    encoder_embedding: Optional[Tensor]  # B x T x C
    encoder_states: Optional[list]  # [T x B x C]
    src_tokens: Optional[Tensor]
    src_lengths: Optional[Tensor]


def _register_model(name: str, dataclass: Any = None) -> Callable[[type], type]:
    def register(cls: type) -> type:
        MODELS[name] = cls
        return cls
    return register


def _register_model_architecture(model_name: str, arch_name: str) -> Callable:
    def register(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        ARCHITECTURES[arch_name] = (model_name, fn)
        return fn
    return register


class FairseqEncoder(nn.Module):
    def __init__(self, dictionary: Any) -> None:
        super().__init__()
        self.dictionary = dictionary


class FairseqDecoder(nn.Module):
    def __init__(self, dictionary: Any) -> None:
        super().__init__()
        self.dictionary = dictionary
        self.onnx_trace = False

    def get_normalized_probs(self, net_output: tuple, log_probs: bool, sample: Any = None) -> Tensor:
        # the adaptive softmax gives log-probs itself; otherwise a float32 (log-)softmax of the logits
        adaptive = getattr(self, "adaptive_softmax", None)
        if adaptive is not None:
            out = adaptive.get_log_prob(net_output[0], target=None)
            return out if log_probs else out.exp()
        logits = net_output[0]
        return _log_softmax(logits, dim=-1) if log_probs else _softmax(logits, dim=-1)


class FairseqIncrementalDecoder(IncrementalStateOwner, FairseqDecoder):
    def reorder_incremental_state_scripting(self, incremental_state: dict, new_order: Tensor) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reorder_incremental_state"):
                result = module.reorder_incremental_state(incremental_state, new_order)
                if result is not None:
                    incremental_state = result


class BaseFairseqModel(nn.Module):
    def get_normalized_probs(self, net_output: tuple, log_probs: bool, sample: Any = None) -> Tensor:
        return self.decoder.get_normalized_probs(net_output, log_probs, sample)

    def get_normalized_probs_scriptable(self, net_output: tuple, log_probs: bool, sample: Any = None) -> Tensor:
        return self.decoder.get_normalized_probs(net_output, log_probs, sample)


class FairseqLanguageModel(BaseFairseqModel):
    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder


class FairseqEncoderDecoderModel(BaseFairseqModel):
    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


class FairseqEncoderModel(BaseFairseqModel):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder


def _init_bert_params(module: nn.Module) -> None:
    # BERT-style init (normal 0.02, zero biases); the generator re-randomises every tensor anyway
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()


class _NotStandedIn(nn.Module):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("only the MEGA encoder of the LRA model is stood in for")


# ---- installation ------------------------------------------------------------------------

def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _package(name: str, path: Path, **attrs: Any) -> types.ModuleType:
    module = _module(name, **attrs)
    module.__path__ = [str(path)]  # submodules load from the ORIGINAL snapshot directory
    return module


def install(snapshot: Path) -> None:
    """Put the stand-in ``fairseq`` package (over the snapshot at ``snapshot``) into ``sys.modules``."""
    source = Path(snapshot) / "fairseq"
    if not (source / "modules" / "moving_average_gated_attention.py").is_file():
        raise FileNotFoundError(f"{snapshot} is not an extracted facebookresearch/mega snapshot (no fairseq/modules/moving_average_gated_attention.py)")
    if any(name == "fairseq" or name.startswith("fairseq.") for name in sys.modules):
        raise RuntimeError("a fairseq package is already imported: run the generator in a fresh interpreter")
    utils = _module(
        "fairseq.utils", relu2=_relu2, laplace=_laplace, softmax=_softmax, log_softmax=_log_softmax,
        get_activation_fn=_get_activation_fn, get_available_activation_fns=lambda: list(_ACTIVATIONS) + ["gelu_fast"],
        fill_with_neg_inf=_fill_with_neg_inf, parse_embedding=_unused, load_embedding=_unused,
    )
    options = _module("fairseq.options", eval_str_list=_eval_str_list)
    incremental = _module("fairseq.incremental_decoding_utils", with_incremental_state=_with_incremental_state,
                          FairseqIncrementalState=IncrementalStateOwner)
    root = _package("fairseq", source, utils=utils, options=options, incremental_decoding_utils=incremental)

    def modules_getattr(name: str) -> Any:
        if name not in MODULE_HOMES:
            raise AttributeError(f"fairseq.modules stand-in does not export {name!r}")
        __import__(f"fairseq.modules.{MODULE_HOMES[name]}")
        return getattr(sys.modules[f"fairseq.modules.{MODULE_HOMES[name]}"], name)

    root.modules = _package("fairseq.modules", source / "modules", __getattr__=modules_getattr)
    _module("fairseq.modules.transformer_sentence_encoder", init_bert_params=_init_bert_params)
    root.models = _package(
        "fairseq.models", source / "models",
        register_model=_register_model, register_model_architecture=_register_model_architecture,
        FairseqEncoder=FairseqEncoder, FairseqDecoder=FairseqDecoder,
        FairseqIncrementalDecoder=FairseqIncrementalDecoder, FairseqLanguageModel=FairseqLanguageModel,
        FairseqEncoderDecoderModel=FairseqEncoderDecoderModel, FairseqEncoderModel=FairseqEncoderModel,
        BaseFairseqModel=BaseFairseqModel,
    )
    _module("fairseq.models.fairseq_encoder", EncoderOut=EncoderOut, FairseqEncoder=FairseqEncoder)
    _package("fairseq.models.lra", source / "models" / "lra")
    for other in ("transformer", "luna", "lstm", "flash"):
        cls_name = {"transformer": "Transformer", "luna": "Luna", "lstm": "LSTM", "flash": "Flash"}[other] + "LRAEncoder"
        _module(f"fairseq.models.lra.{other}_lra_encoder", **{cls_name: _NotStandedIn})
    _package("fairseq.models.speech_commands", source / "models" / "speech_commands")


class Dictionary:
    """fairseq's dictionary, as far as model building needs it: size and the special ids."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.bos_index, self.pad_index, self.eos_index, self.unk_index = 0, 1, 2, 3

    def __len__(self) -> int:
        return self.size

    def bos(self) -> int:
        return self.bos_index

    def pad(self) -> int:
        return self.pad_index

    def eos(self) -> int:
        return self.eos_index

    def unk(self) -> int:
        return self.unk_index


class Task:
    """fairseq's task, as far as ``build_model`` needs it: the dictionaries."""

    def __init__(self, dictionary: Optional[Dictionary]) -> None:
        self.dictionary = self.source_dictionary = self.target_dictionary = dictionary
