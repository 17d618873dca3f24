"""Clear errors for checkpoints that ``from_pretrained`` cannot load.

transformers already loads safetensors first and ``.bin`` files with
``torch.load(weights_only=True)``, but its errors for a bad checkpoint rarely name the file
or the config field at fault (a truncated ``.bin`` gives ``OSError: [Errno 22]`` on 5.x, a
refused pickle on 4.57 an ``OSError`` about TensorFlow, a missing ``hidden_size`` a size
mismatch deep in an ``Embedding``). This module translates them, once loading has failed:
the happy path is untouched.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any, Final, Mapping

import torch

from ...core.config import MegaCoreConfig

SAFETENSORS_FILES: Final = ("model.safetensors", "model.safetensors.index.json")
PICKLE_FILES: Final = ("pytorch_model.bin", "pytorch_model.bin.index.json")
CONFIG_FILE: Final = "config.json"
_MISSING: Final = object()


class CheckpointError(OSError):
    """A weights file that cannot be loaded; ``path`` names it, ``field`` the config field at fault."""

    def __init__(self, message: str, *, path: Path, field: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.field = field


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """Weights whose shapes or layer count disagree with the config.

    Also a ``RuntimeError``: that is what transformers raises for mismatched sizes (and what
    callers written against it, its own common tests among them, catch).
    """


class ConfigFileError(ValueError):
    """A config.json whose values are invalid; ``path`` names the file, ``field`` the key."""

    def __init__(self, message: str, *, path: Path | None, field: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.field = field


def local_directory(source: Any, subfolder: str = "") -> Path | None:
    """The checkpoint directory when ``source`` is a local path, else None (hub ids)."""
    try:
        directory = Path(source) / subfolder
    except TypeError:
        return None
    return directory if directory.is_dir() else None


def read_config_json(directory: Path | None) -> dict[str, Any] | None:
    """The raw config.json of a local checkpoint, or None when absent or unreadable."""
    if directory is None or not (directory / CONFIG_FILE).is_file():
        return None
    try:
        loaded = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def check_config(config: Any, directory: Path | None) -> None:
    """Validate ``config`` (a ``MegaConfig``); blame config.json when its values came from there."""
    try:
        config.to_core()
    except (ValueError, TypeError) as err:
        field = _field_named_in(str(err))
        saved = read_config_json(directory)
        from_file = saved is not None and (field is None or saved.get(field, _MISSING) == getattr(config, field, None))
        if from_file:
            assert directory is not None
            path = directory / CONFIG_FILE
            raise ConfigFileError(f"{path}: {err}", path=path, field=field) from err
        raise ConfigFileError(f"config passed to from_pretrained: {err}", path=None, field=field) from err


# Fields whose size shows in a checkpoint, and how to read it: (key suffix, dimension).
_SIZE_PROBES: Final[Mapping[str, tuple[str, int]]] = {
    "vocab_size": ("embedding_layer.word_embeddings.weight", 0),
    "hidden_size": ("embedding_layer.word_embeddings.weight", 1),
    "type_vocab_size": ("embedding_layer.token_type_embeddings.weight", 0),
    "intermediate_size": ("layers.0.mega_layer.v_proj.weight", 0),
    "shared_representation_size": ("layers.0.mega_layer.qk_weight", 1),
    "ema_projection_size": ("layers.0.mega_layer.ema_gate.damping_factor", 1),
    "nffn_hidden_size": ("layers.0.nffn.fc1.weight", 0),
}


def _field_named_in(message: str) -> str | None:
    names = [f for f in MegaCoreConfig.__dataclass_fields__ if f != "extra"]
    for name in sorted(names, key=len, reverse=True):  # longest first: "hidden_size" inside "nffn_hidden_size"
        if re.search(rf"\b{name}\b", message):
            return name
    return None


_LAYER_KEY: Final = re.compile(r"(?:^|\.)layers\.(\d+)\.")
"""Finds a MEGA layer index in a state-dict key."""


def checkpoint_shapes(directory: Path) -> tuple[Path, dict[str, tuple[int, ...]]] | None:
    """(file, key -> shape) of the weights transformers would pick; CheckpointError if unreadable.

    Safetensors come first (only the header is read); a pickle is opened with
    ``weights_only=True`` only, so a malicious one is refused, never run.
    """
    path = checkpoint_file(directory)
    if path is None:
        return None
    files = _shard_files(path) if path.name.endswith(".index.json") else [path]
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        shapes.update(_safetensors_shapes(file) if file.suffix == ".safetensors" else _pickle_shapes(file))
    return path, shapes


def _shard_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        return [index.parent / shard for shard in sorted(set(weight_map.values()))]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{index}: not a valid shard index ({err})", path=index) from err


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as err:  # SafetensorError is not exported under one name in every version
        raise CheckpointError(
            f"{path}: not a valid safetensors file (truncated or corrupt: {err}); re-download or re-save it",
            path=path,
        ) from err


def _pickle_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        culprit = f" (it references {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: refused to unpickle: the file holds objects other than tensors{culprit}, which "
            "torch.load(weights_only=True) blocks because unpickling them could run code. Nothing was "
            "executed. If you trust the file, convert it to safetensors in a sandbox.",
            path=path,
        ) from err
    except Exception as err:  # zip/EOF/runtime errors of a damaged file
        raise CheckpointError(
            f"{path}: not a readable PyTorch weights file (truncated or corrupt: {err}); re-download or re-save it",
            path=path,
        ) from err
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a state dict", path=path)
    return {str(key): tuple(value.shape) for key, value in loaded.items() if isinstance(value, torch.Tensor)}


def inferred_sizes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, str]]:
    """Config sizes read off checkpoint shapes: field -> (value, evidence)."""
    found: dict[str, tuple[int, str]] = {}
    for field, (suffix, dim) in _SIZE_PROBES.items():
        for key, shape in shapes.items():
            if (key == suffix or key.endswith("." + suffix)) and len(shape) > dim:
                found[field] = (shape[dim], f"{key} has shape {list(shape)}")
                break
    layer_ids = {int(m.group(1)) for key in shapes if (m := _LAYER_KEY.search(key))}
    if layer_ids:
        found["num_hidden_layers"] = (max(layer_ids) + 1, f"layers 0..{max(layer_ids)} are stored")
    return found


def explain_shape_mismatch(
    config: Any, path: Path, shapes: Mapping[str, tuple[int, ...]], saved: Mapping[str, Any] | None
) -> CheckpointError | None:
    """A CheckpointError naming the config field(s) the checkpoint disagrees with, or None."""
    sizes = inferred_sizes(shapes)
    problems: list[str] = []
    fields: list[str] = []
    for field, (value, evidence) in sizes.items():
        expected = getattr(config, field, None)
        if field == "type_vocab_size" and not getattr(config, "add_token_type_embeddings", False):
            continue
        if expected != value:
            said = (
                f"config.json has no {field}, so the default {expected!r} was used"
                if saved is not None and field not in saved
                else f"the config says {expected!r}"
            )
            problems.append(f"{field}: the checkpoint has {value} ({evidence}) but {said}")
            fields.append(field)
    ema = next((shape for key, shape in shapes.items() if key.endswith("ema_gate.damping_factor")), None)
    if ema is not None and "hidden_size" not in fields:
        bidirectional = ema[0] == 2 * config.hidden_size
        if bidirectional != bool(config.bidirectional):
            problems.append(
                f"bidirectional: the checkpoint's EMA has {ema[0]} rows (bidirectional={bidirectional}); "
                f"the config says bidirectional={config.bidirectional!r}"
            )
            fields.append("bidirectional")
    if not problems:
        return None
    message = f"{path} does not match its config: " + "; ".join(problems)
    return CheckpointMismatchError(message, path=path, field=fields[0])


def check_layer_count(source: Any, directory: Path | None, config: Any, info: Mapping[str, Any]) -> None:
    """After a load: refuse a checkpoint with more or fewer MEGA layers than the config.

    transformers only warns here (missing layers are left randomly initialised, extra ones
    dropped), which would silently run a different model than the one saved. A checkpoint
    without a single MEGA layer is not a layer-count mismatch but a file of something else (or
    nothing): transformers' own report, which lists every missing key, stands for it.
    """
    missing = [key for key in info.get("missing_keys", ()) if _LAYER_KEY.search(key)]
    unexpected = [key for key in info.get("unexpected_keys", ()) if _LAYER_KEY.search(key)]
    if not missing and not unexpected:
        return
    if not unexpected and min(int(_LAYER_KEY.search(key).group(1)) for key in missing) == 0:  # type: ignore[union-attr]
        return
    configured = config.num_hidden_layers
    if unexpected:
        stored = max(int(_LAYER_KEY.search(key).group(1)) for key in unexpected) + 1  # type: ignore[union-attr]
    else:
        stored = min(int(_LAYER_KEY.search(key).group(1)) for key in missing)  # type: ignore[union-attr]
    found = checkpoint_file(directory)
    path = found if found is not None else Path(str(source))
    raise CheckpointMismatchError(
        f"{path} does not match its config: num_hidden_layers: the checkpoint has {stored} "
        f"but the config says {configured} (keys such as {(unexpected or missing)[0]!r} "
        f"{'are not in the model' if unexpected else 'are missing from the checkpoint'})",
        path=path,
        field="num_hidden_layers",
    )


_LM_DENSE_KEYS = ("dense.weight", "dense.bias")


def check_lm_dense_layer(source: Any, directory: Path | None, model: Any, info: Mapping[str, Any]) -> None:
    """After a load into an LM head: refuse weights that disagree with ``add_lm_hidden_dense_layer``.

    transformers only reports the ``dense`` layer as missing (then randomly initialised) or as
    unexpected (then dropped): either way the loaded head is not the saved one. Loading an LM
    checkpoint into a model without an LM head, or a checkpoint without one into an LM head, is
    the usual change of task and is left alone.
    """
    if not any(getattr(model, head, None) is not None for head in ("lm_head", "mlm_head", "adaptive_softmax")):
        return
    if any(key.startswith(("lm_head.", "mlm_head.", "adaptive_softmax.")) for key in info.get("missing_keys", ())):
        return  # the checkpoint has no LM head at all (a base model's): a change of task as well
    missing = [key for key in info.get("missing_keys", ()) if key in _LM_DENSE_KEYS]
    unexpected = [key for key in info.get("unexpected_keys", ()) if key in _LM_DENSE_KEYS]
    if not missing and not unexpected:
        return
    found = checkpoint_file(directory)
    path = found if found is not None else Path(str(source))
    stored = bool(unexpected)
    raise CheckpointMismatchError(
        f"{path} does not match its config: add_lm_hidden_dense_layer: the checkpoint "
        f"{'holds' if stored else 'has no'} the LM head's dense layer ({(unexpected or missing)[0]!r}) but the "
        f"config says add_lm_hidden_dense_layer={model.config.add_lm_hidden_dense_layer!r}; "
        f"load with add_lm_hidden_dense_layer={stored!r}",
        path=path,
        field="add_lm_hidden_dense_layer",
    )


def checkpoint_file(directory: Path | None) -> Path | None:
    """The weights file transformers reads from a local checkpoint directory, if any."""
    if directory is None:
        return None
    return next((directory / name for name in SAFETENSORS_FILES + PICKLE_FILES if (directory / name).is_file()), None)
