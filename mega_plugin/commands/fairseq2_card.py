"""``mega-plugin fairseq2-card``: write a fairseq2 asset card for an HF MEGA directory (causal LM:
family ``mega``; encoder-decoder: ``mega_seq2seq``; sequence/image classifier: ``mega_classifier``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

NAME: Final = "fairseq2-card"
HELP: Final = "write a fairseq2 asset card (YAML) for a Hugging Face MEGA directory (causal LM, translation, classifier)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hf_dir", metavar="HF_DIR", help="directory with config.json and the safetensors weights")
    parser.add_argument("--name", required=True, help="asset card name (what fairseq2.models.load_model takes)")
    parser.add_argument("--output", metavar="FILE", help="write the card here (default: standard output)")
    parser.add_argument(
        "--max-seq-len", type=int, default=None, help="longest sequence generators may produce (default: the config's)"
    )


def seq2seq_card(hf_config: dict[str, Any], hf_dir: Path, name: str) -> dict[str, Any]:
    """The asset card dict of an ``EncoderDecoderModel`` directory of two MEGAs: family ``mega_seq2seq``."""
    from ..adapters.fairseq2.seq2seq_config import MEGA_SEQ2SEQ_FAMILY, MegaSeq2SeqConfig, seq2seq_config_values

    config = MegaSeq2SeqConfig.from_hf_config(hf_config)
    config.encoder_core(), config.decoder_core()  # validates, so a bad card is never written
    return {
        "name": name,
        "model_family": MEGA_SEQ2SEQ_FAMILY,
        "model_config": seq2seq_config_values(config),
        "checkpoint": str(hf_dir.resolve()),
    }


FAIRSEQ2_TARGETS: Final = (
    "MegaForCausalLM",
    "EncoderDecoderModel",
    "MegaForSequenceClassification",
    "MegaForImageClassification",
)
"""HF architectures with a fairseq2 family: ``mega`` (causal LM), ``mega_seq2seq`` (translation),
``mega_classifier`` (sequence and image classifiers)."""


def check_fairseq2_target(hf_config: dict[str, Any]) -> None:
    """``ValueError`` before anything is written when the converted model has no fairseq2 family
    (fairseq2 0.8.1 has no encoder-classifier model pattern: LRA classifiers convert ``--to hf``)."""
    architectures = hf_config.get("architectures") or []
    if hf_config.get("model_type") == "encoder-decoder" or any(a in FAIRSEQ2_TARGETS for a in architectures):
        return
    if hf_config.get("is_decoder") and "MegaModel" in architectures:
        return  # a causal stack without its head: the mega family's config checks the rest
    raise ValueError(
        f"--to fairseq2: the converted model is a {', '.join(architectures) or 'bare MEGA encoder'}, and fairseq2 has "
        "MEGA families only for causal language models (mega), translation models (mega_seq2seq) and "
        "classifiers (mega_classifier); allowed here: --to hf"
    )


def classifier_card(hf_config: dict[str, Any], hf_dir: Path, name: str) -> dict[str, Any]:
    """The ``mega_classifier`` card of an HF sequence/image classifier directory."""
    import dataclasses

    from ..adapters.fairseq2.classifier_config import MEGA_CLASSIFIER_FAMILY, MegaClassifierConfig

    config = MegaClassifierConfig.from_hf_config(hf_config)
    config.to_core()  # validated before the card is written
    return {
        "name": name,
        "model_family": MEGA_CLASSIFIER_FAMILY,
        "model_config": dataclasses.asdict(config),
        "checkpoint": str(hf_dir.resolve()),
    }


def build_card(hf_dir: Path, name: str, *, max_seq_len: int | None = None) -> dict[str, Any]:
    """The asset card dict: family ``mega``, ``model_config`` from config.json, checkpoint = ``hf_dir``
    (an encoder-decoder directory gets a ``mega_seq2seq`` card)."""
    from ..adapters.fairseq2.config import MEGA_FAMILY, MegaLMConfig, config_values

    config_file = hf_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: HF_DIR must be a Hugging Face MEGA model directory")
    hf_config = json.loads(config_file.read_text())
    if hf_config.get("model_type") == "encoder-decoder":
        card = seq2seq_card(hf_config, hf_dir, name)
        if max_seq_len is not None:
            card["model_config"]["max_target_seq_len"] = max_seq_len
        return card
    if hf_config.get("model_type") not in (None, "mega"):
        raise ValueError(f"{config_file} has model_type={hf_config.get('model_type')!r}, expected 'mega'")
    if set(hf_config.get("architectures") or []) & {"MegaForSequenceClassification", "MegaForImageClassification"}:
        return classifier_card(hf_config, hf_dir, name)
    config = MegaLMConfig.from_hf_config(hf_config)
    if max_seq_len is not None:
        config.max_seq_len = max_seq_len
    return {
        "name": name,
        "model_family": MEGA_FAMILY,
        "model_config": config_values(config),
        "checkpoint": str(hf_dir.resolve()),
    }


def run(args: argparse.Namespace) -> int:
    try:
        import yaml
    except ImportError:
        print(f"mega-plugin {NAME}: needs PyYAML (pip install pyyaml) to write the card", file=sys.stderr)
        return 1

    try:
        card = build_card(Path(args.hf_dir), args.name, max_seq_len=args.max_seq_len)
    except (OSError, ValueError) as error:
        print(f"mega-plugin {NAME}: {error}", file=sys.stderr)
        return 1
    text = yaml.safe_dump(card, sort_keys=False)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"wrote {output}")
    else:
        sys.stdout.write(text)
    return 0
