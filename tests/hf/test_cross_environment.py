"""Reference checkpoints move from transformers 4.57.6 to 5.x and back (hf environment).

The fairseq2 environment's interpreter (transformers 4.57.6, the reference MEGA) writes reference
checkpoints and the outputs it computed (``reference_checkpoints.py write``). Here, on
transformers 5.x, our Auto classes load them (safetensors and ``pytorch_model.bin``) through the
5.x meta-device path with zero missing, unexpected or mismatched keys, no tensor left on the meta
device, and the reference's outputs (max abs diff <= 1e-5). We save them again with 5.x, and the
reference interpreter loads those directories into the reference classes
(``reference_checkpoints.py verify``) with zero key problems and the same outputs.

The reference interpreter is ``$MEGA_PLUGIN_REFERENCE_PYTHON`` or ``.venvs/fairseq2/bin/python``
in this checkout. Under ``scripts/test.sh`` (``MEGA_PLUGIN_ENV`` set) a missing one is an error;
a hand-run pytest skips.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mega_hf_reference_checkpoints as rc  # noqa: E402
import mega_plugin  # noqa: E402,F401  (registers the Auto classes)
import mega_plugin.adapters.hf as ours_hf  # noqa: E402
from mega_hf_helpers import HEADS, HEADS_BY_ID, TOLERANCE  # noqa: E402
from _support.environment import requires_transformers_5  # noqa: E402

pytestmark = [requires_transformers_5()]

CHECKOUT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("reference_checkpoints.py")
NAMES = [
    rc.directory_name(case, head.id, file_format)
    for case in rc.checkpoint_cases()
    for head in HEADS
    for file_format in rc.FORMATS
]


def reference_python() -> Path:
    configured = os.environ.get("MEGA_PLUGIN_REFERENCE_PYTHON")
    candidate = Path(configured) if configured else CHECKOUT / ".venvs" / "fairseq2" / "bin" / "python"
    if not candidate.exists():
        message = f"no reference interpreter at {candidate} (set MEGA_PLUGIN_REFERENCE_PYTHON)"
        if os.environ.get("MEGA_PLUGIN_ENV"):
            pytest.fail(message)
        pytest.skip(message)
    return candidate


def run_reference(*arguments: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(reference_python()), str(SCRIPT), *arguments], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, f"reference interpreter failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("from-4.57")
    run_reference("write", str(root))
    return root, torch.load(root / "expected.pt", weights_only=True)


@pytest.fixture(scope="module")
def resaved_dir(reference_dir: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every reference checkpoint loaded by our classes on 5.x and saved again in the same format."""
    root, _ = reference_dir
    out = tmp_path_factory.mktemp("from-5.x")
    for name in NAMES:
        head = HEADS_BY_ID[name.split("-")[-2]]
        model = getattr(ours_hf, head.class_name).from_pretrained(root / name)
        model.save_pretrained(out / name, safe_serialization=name.endswith("safetensors"))
    return out


def test_the_reference_interpreter_is_transformers_4_57() -> None:
    version = subprocess.run(
        [str(reference_python()), "-c", "import transformers; print(transformers.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version.startswith("4.57"), version
    assert transformers.__version__.startswith("5."), transformers.__version__


@pytest.mark.parametrize("name", NAMES)
def test_reference_checkpoint_loads_on_transformers_5(name: str, reference_dir: tuple[Path, dict]) -> None:
    root, expected = reference_dir
    head = HEADS_BY_ID[expected[name]["head"]]
    model, info = getattr(transformers, head.auto_name).from_pretrained(root / name, output_loading_info=True)
    assert type(model) is getattr(ours_hf, head.class_name)
    problems = {key: list(value) for key, value in info.items() if list(value)}
    assert not problems, f"{name}: {problems}"
    on_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    assert not on_meta, f"{name}: still on the meta device after loading: {on_meta}"
    record = expected[name]
    call = dict(record["call"])
    if record["use_cache"]:
        call["use_cache"] = False
    with torch.no_grad():
        outputs = model.eval()(**call)
    diff = rc.max_output_diff(head.id, outputs, record)
    assert diff <= TOLERANCE, f"{name}: max abs diff {diff:.3g}"


def test_what_transformers_5_saves_loads_into_the_reference(reference_dir: tuple[Path, dict], resaved_dir: Path) -> None:
    root, expected = reference_dir
    lines = run_reference("verify", str(resaved_dir), str(root / "expected.pt")).splitlines()
    results = {entry["name"]: entry for entry in map(json.loads, lines)}
    assert sorted(results) == sorted(NAMES)
    for name, entry in results.items():
        assert ".deprecated.mega." in entry["class"], entry["class"]
        problems = {key: value for key, value in entry["info"].items() if value}
        assert not problems, f"{name}: {problems}"
        assert entry["max_diff"] <= TOLERANCE, f"{name}: max abs diff {entry['max_diff']:.3g}"
