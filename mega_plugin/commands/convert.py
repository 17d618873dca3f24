"""``mega-plugin convert --from NAME CKPT --to {hf,fairseq2} OUT_DIR``: checkpoints into the HF MEGA layout.

The converter comes from the plugin registry (built-in: ``fairseq-mega``). The checkpoint is
loaded with ``torch.load(weights_only=True)`` (``argparse.Namespace`` and numpy scalars allowed
by name, as fairseq writes them: :mod:`mega_plugin.converters.checkpoint_file`); OUT_DIR receives ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``
without the ``safetensors`` package). transformers is not imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final, Mapping, TextIO

NAME: Final = "convert"
HELP: Final = "Convert a checkpoint (e.g. original fairseq MEGA) into a Hugging Face MEGA directory."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("--from", dest="source_format", required=True, metavar="NAME",
                        help="converter name, e.g. fairseq-mega (see `mega-plugin info`)")
    parser.add_argument("checkpoint", metavar="CKPT", help="source checkpoint file")
    parser.add_argument("--to", dest="target_format", default="hf", choices=("hf", "fairseq2"),
                        help="target layout: hf (a transformers directory) or fairseq2 (the same directory plus an "
                             "asset card NAME.yaml that fairseq2's load_model finds through FAIRSEQ2_USER_ASSET_DIR)")
    parser.add_argument("--name", metavar="NAME",
                        help="asset card name for --to fairseq2 (default: the OUT_DIR folder name)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write config.json and the weights to")
    parser.add_argument("--allow-drop", action="append", default=[], metavar="KEY_PATTERN",
                        help="glob of source keys the target layout cannot hold that may be dropped (repeatable)")
    parser.add_argument("--original-args", metavar="JSON",
                        help="JSON file of the original training arguments (merged over the checkpoint's own)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load with weights_only=False: runs pickled code, only for files you trust")
    parser.add_argument("--bin", action="store_true", help="write pytorch_model.bin instead of model.safetensors")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR/config.json")


class Progress:
    """A tiny progress display on a stream: redrawn in place on a terminal, one final line otherwise."""

    def __init__(self, stream: TextIO, *, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())

    def stage(self, text: str) -> None:
        """Announce a step."""
        print(f"mega-plugin convert: {text}", file=self.stream, flush=True)

    def update(self, done: int, total: int, label: str = "") -> None:
        """Show ``done`` of ``total`` (drawn on a terminal every call, elsewhere only at the end)."""
        if not self.interactive and done < total:
            return
        filled = self.width * done // max(total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        end = "\n" if done >= total else ""
        text = f"[{bar}] {done}/{total} {label}"[:120]
        print(f"\r{text:<120}" if self.interactive else text, end=end, file=self.stream, flush=True)


def _plain_args(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, argparse.Namespace):
        return dict(vars(value))
    if isinstance(value, Mapping):
        return dict(value)
    return dict(vars(value)) if hasattr(value, "__dict__") else None


def checkpoint_parts(obj: Any) -> tuple[Mapping[str, Any], dict[str, Any] | None]:
    """(state dict, original args) of a loaded checkpoint: fairseq's ``{"model", "args"|"cfg"}`` or a bare state dict."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        args = _plain_args(obj.get("args"))
        cfg = obj.get("cfg")
        if args is None and isinstance(cfg, Mapping):
            args = _plain_args(cfg.get("model"))
        return obj["model"], args
    if isinstance(obj, Mapping):
        return obj, None
    raise ValueError(f"the checkpoint holds a {type(obj).__name__}, not a state dict")


def _fail(message: str, code: int = 1) -> int:
    print(f"mega-plugin convert: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    """Convert ``args.checkpoint`` with converter ``args.source_format`` into ``args.out_dir``."""
    import logging

    from mega_plugin.registry import ConversionError, NotRegisteredError, get_converter
    from mega_plugin.formats.hf import save_hf_directory

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    out_dir = Path(args.out_dir)
    if (out_dir / "config.json").exists() and not args.overwrite:
        return _fail(f"{out_dir / 'config.json'} exists (pass --overwrite to replace it)", 2)
    try:
        converter = get_converter(args.source_format)
    except NotRegisteredError as error:
        return _fail(str(error), 2)
    from ..converters.checkpoint_file import load_checkpoint

    progress = Progress(sys.stderr)
    progress.stage(f"loading {args.checkpoint}")
    try:
        state_dict, original_args = checkpoint_parts(load_checkpoint(Path(args.checkpoint), trust=args.trust_checkpoint))
        if args.original_args:
            extra = json.loads(Path(args.original_args).read_text(encoding="utf-8"))
            original_args = {**(original_args or {}), **extra}
    except (OSError, ValueError, RuntimeError) as error:
        return _fail(str(error))
    progress.stage(f"converting {len(state_dict)} tensors with {converter.name} ({converter.source})")
    try:
        config, hf_state = converter.run(state_dict, original_args, allow_drop=args.allow_drop)
    except ConversionError as error:
        return _fail(str(error))
    if args.target_format == "fairseq2":
        from .fairseq2_card import check_fairseq2_target

        try:
            check_fairseq2_target(config)
        except ValueError as error:
            return _fail(str(error))
    progress.stage(f"writing {out_dir}")
    files = save_hf_directory(out_dir, config, hf_state, progress=progress.update, safe_serialization=not args.bin)
    if args.target_format == "fairseq2":
        try:
            files.append(_write_fairseq2_card(out_dir, args.name or out_dir.resolve().name))
        except (ImportError, ValueError) as error:
            return _fail(f"the HF directory is written, but not its fairseq2 card: {error}")
    parameters = sum(t.numel() for t in hf_state.values())
    print(f"wrote {', '.join(str(f) for f in files)} ({len(hf_state)} tensors, {parameters:,} values)")
    return 0


def _write_fairseq2_card(out_dir: Path, name: str) -> Path:
    """``OUT_DIR/NAME.yaml``: the card of the directory just written (family ``mega`` or ``mega_seq2seq``)."""
    import yaml  # fairseq2 extra

    from .fairseq2_card import build_card

    card_path = out_dir / f"{name}.yaml"
    card_path.write_text(yaml.safe_dump(build_card(out_dir, name), sort_keys=False), encoding="utf-8")
    return card_path
