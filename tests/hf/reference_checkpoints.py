"""Checkpoints written by the transformers 4.57.6 reference MEGA, with the outputs it computed.

Used two ways:

* imported by ``test_checkpoints.py`` in the fairseq2 environment (reference and ours side by side);
* run as a script by the *fairseq2 environment's* interpreter, from ``test_cross_environment.py``
  in the hf environment (transformers 5.x has no reference)::

      python tests/hf/reference_checkpoints.py write OUT_DIR
      python tests/hf/reference_checkpoints.py verify DIR EXPECTED

  ``write`` creates ``OUT_DIR/<case>-<head>-<format>/`` (``save_pretrained`` directories) and
  ``OUT_DIR/expected.pt``: for each directory the head, the forward inputs, the real-token mask
  and the reference outputs (tensors only, so it loads with ``torch.load(weights_only=True)``).
  ``verify`` loads every directory listed in ``EXPECTED`` from ``DIR`` (saved by *our* classes,
  e.g. on transformers 5.x) into the *reference* classes and prints one JSON line per directory
  with the loading report and the largest output difference.

Nothing of mega_plugin is imported here: the reference alone reads and writes the files, exactly
as a user of the deprecated MEGA would.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Mapping

import torch


def _helpers() -> Any:
    # ``mega_hf_helpers`` when running under pytest (conftest registers it); loaded by path otherwise.
    if "mega_hf_helpers" in sys.modules:
        return sys.modules["mega_hf_helpers"]
    spec = importlib.util.spec_from_file_location("mega_hf_helpers", Path(__file__).with_name("helpers.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mega_hf_helpers"] = module
    spec.loader.exec_module(module)
    return module


FORMATS: Final = ("safetensors", "bin")


@dataclass(frozen=True)
class CheckpointCase:
    """One reference configuration that is saved for every head."""

    name: str
    config: Mapping[str, Any]
    length: int


def checkpoint_cases() -> tuple[CheckpointCase, ...]:
    """Three configurations that together touch every parameter kind a checkpoint can hold:
    causal + chunked + simple bias + untied head; bidirectional + rotary (its ``_float_tensor``
    buffer) + token types + layernorm; encoder with a causal EMA + batch norm (running
    statistics) + laplace + no NFFN + no LM dense layer."""
    tiny = dict(_helpers().TINY)
    return (
        CheckpointCase(
            "causal-chunked-simple",
            dict(
                tiny,
                is_decoder=True,
                bidirectional=False,
                use_chunking=True,
                chunk_size=8,
                relative_positional_bias="simple",
                attention_activation="relu2",
                normalization_type="scalenorm",
                tie_word_embeddings=False,
                truncation=5,
            ),
            16,
        ),
        CheckpointCase(
            "bidir-rotary-types",
            dict(
                tiny,
                bidirectional=True,
                relative_positional_bias="rotary",
                add_token_type_embeddings=True,
                normalization_type="layernorm",
                normalize_before_mega=False,
            ),
            12,
        ),
        CheckpointCase(
            "unidir-batchnorm-laplace",
            dict(
                tiny,
                bidirectional=False,
                attention_activation="laplace",
                normalization_type="batchnorm",
                use_normalized_ffn=False,
                add_lm_hidden_dense_layer=False,
                activation="gelu",
            ),
            10,
        ),
    )


def directory_name(case: CheckpointCase, head_id: str, file_format: str) -> str:
    return f"{case.name}-{head_id}-{file_format}"


def output_fields(head: Any) -> tuple[str, ...]:
    return tuple(head.per_token) + tuple(head.per_sequence)


def reference_call(head: Any, batch: Any) -> dict[str, Any]:
    """The forward arguments (the QA loss depends on padded positions: left out)."""
    call = batch.without("start_positions", "end_positions")
    if head.id in ("Model", "CausalLM"):
        call["use_cache"] = False
    return call


def write_reference_checkpoints(root: Path) -> dict[str, dict[str, Any]]:
    """Save every (case, head, format) with the reference; return and store the expected outputs."""
    helpers = _helpers()
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, dict[str, Any]] = {}
    for case in checkpoint_cases():
        for head in helpers.HEADS:
            reference = helpers.build_reference(head, dict(case.config, use_cache=False), seed=11)
            batch = helpers.make_batch(head, case.config, length=case.length, seed=4)
            call = reference_call(head, batch)
            with torch.no_grad():
                outputs = reference(**call)
            record = {
                "head": head.id,
                "call": {k: v for k, v in call.items() if isinstance(v, torch.Tensor)},
                "use_cache": "use_cache" in call,
                "valid": batch.flat_valid() if head.id == "MultipleChoice" else batch.valid,
                "outputs": {
                    name: getattr(outputs, name) for name in output_fields(head) if getattr(outputs, name) is not None
                },
            }
            for file_format in FORMATS:
                name = directory_name(case, head.id, file_format)
                reference.save_pretrained(root / name, safe_serialization=file_format == "safetensors")
                expected[name] = record
    torch.save(expected, root / "expected.pt")
    return expected


def load_into_reference(directory: Path, head_id: str) -> tuple[Any, dict[str, list[Any]]]:
    """``from_pretrained`` of the reference head class; returns (model in eval mode, loading info)."""
    helpers = _helpers()
    modeling, _ = helpers.reference_modules()
    model_class = getattr(modeling, helpers.HEADS_BY_ID[head_id].class_name)
    model, info = model_class.from_pretrained(directory, output_loading_info=True)
    return model.eval(), {key: list(value) for key, value in info.items()}


def max_output_diff(head_id: str, outputs: Any, record: Mapping[str, Any]) -> float:
    """Largest difference to the recorded outputs, at real tokens for per-token fields."""
    helpers = _helpers()
    head = helpers.HEADS_BY_ID[head_id]
    valid = record["valid"]
    worst = 0.0
    for name, expected in record["outputs"].items():
        actual = getattr(outputs, name)
        if name in head.per_token:
            actual, expected = actual[valid], expected[valid]
        worst = max(worst, helpers.max_diff(actual, expected))
    return worst


def verify_directories(root: Path, expected_file: Path) -> list[dict[str, Any]]:
    """Load each directory of ``expected_file`` from ``root`` into the reference and compare."""
    records = torch.load(expected_file, weights_only=True)
    results = []
    for name, record in sorted(records.items()):
        model, info = load_into_reference(root / name, record["head"])
        call = dict(record["call"])
        if record["use_cache"]:
            call["use_cache"] = False
        with torch.no_grad():
            outputs = model(**call)
        results.append(
            {
                "name": name,
                "class": type(model).__module__ + "." + type(model).__name__,
                "info": {key: [str(item) for item in value] for key, value in info.items()},
                "max_diff": max_output_diff(record["head"], outputs, record),
            }
        )
    return results


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "write":
        written = write_reference_checkpoints(Path(argv[1]))
        print(f"wrote {len(written)} reference checkpoints to {argv[1]}")
        return 0
    if len(argv) == 3 and argv[0] == "verify":
        import json

        for result in verify_directories(Path(argv[1]), Path(argv[2])):
            print(json.dumps(result))
        return 0
    print("usage: reference_checkpoints.py write OUT_DIR | verify DIR EXPECTED", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
