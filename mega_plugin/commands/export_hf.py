"""``mega-plugin export-hf``: write a fairseq2 MEGA model as a Hugging Face directory."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Final

NAME: Final = "export-hf"
HELP: Final = "export a fairseq2 MEGA model (asset card name) as a Hugging Face MegaForCausalLM directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="fairseq2 asset card name of a 'mega' family model")
    parser.add_argument("output", metavar="OUT_DIR", help="directory to write config.json and model.safetensors to")
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="load the weights from this fairseq2 checkpoint instead of the card's (config still from the card)",
    )


def export_hf(model: str, output: Path, *, checkpoint: Path | None = None) -> list[Path]:
    """Load ``model`` through fairseq2 and write it as an HF directory; returns the files written."""
    from fairseq2.models.hub import ModelHubAccessor

    from ..adapters.fairseq2.config import MEGA_FAMILY, MegaLMConfig
    from ..adapters.fairseq2.interop import to_hf_state_dict
    from ..adapters.fairseq2.model import MegaCausalLM
    from ..formats.hf import save_hf_directory

    hub = ModelHubAccessor(MEGA_FAMILY, MegaCausalLM, MegaLMConfig)()
    config = hub.get_model_config(model)
    if checkpoint is not None:
        lm = hub.load_custom_model(checkpoint, config)
    else:
        lm = hub.load_model(model)
    hf_config = config.to_hf_config()
    state_dict = to_hf_state_dict(lm.state_dict(), config)
    return save_hf_directory(output, hf_config, state_dict)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("fairseq2") is None:
        print(f"mega-plugin {NAME}: needs fairseq2 (pip install 'mega-plugin[fairseq2]')", file=sys.stderr)
        return 1
    try:
        files = export_hf(args.model, Path(args.output), checkpoint=Path(args.checkpoint) if args.checkpoint else None)
    except (OSError, ValueError, LookupError) as error:
        print(f"mega-plugin {NAME}: {error}", file=sys.stderr)
        return 1
    for file in files:
        print(f"wrote {file}")
    return 0
