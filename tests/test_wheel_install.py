"""The startup hook in a real wheel install: nothing to import, and ``pip uninstall`` removes it.

Builds the wheel of this checkout (``pip wheel --no-deps --no-build-isolation``, offline), installs
it into a fresh venv that sees this environment's torch and transformers through a path-only
``.pth`` file (its ``.pth`` files, including the editable mega-plugin, are not processed), and runs
a fresh ``python -c`` that never names mega_plugin: it loads a tiny MEGA directory through
``AutoModel`` / ``AutoModelForCausalLM``, generates, and runs ``pipeline("text-generation")``.
Then ``pip uninstall`` and the ``.pth`` file, the hook module and the package must be gone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from _support.environment import requires_transformers_5

ROOT = Path(__file__).resolve().parents[1]
PTH_NAME = "mega_plugin_autoregister.pth"
HOOK_FILE = "_mega_plugin_autoregister.py"
BUILD_INPUTS = ("pyproject.toml", "README.md", "MANIFEST.in", "build_hooks.py", HOOK_FILE, "mega_plugin")

pytestmark = [pytest.mark.hf, pytest.mark.slow, requires_transformers_5()]

CHILD = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("error", RuntimeWarning)  # a failing hook would warn
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, pipeline
    directory = sys.argv[1]
    base = AutoModel.from_pretrained(directory)
    lm = AutoModelForCausalLM.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    inputs = tokenizer("Hello my dog", return_tensors="pt")
    ids = lm.generate(**inputs, min_new_tokens=4, max_new_tokens=4, do_sample=False)
    generated = pipeline("text-generation", model=directory)("Hello my dog", max_new_tokens=3, do_sample=False)
    module = type(lm).__module__
    print(json.dumps({
        "base": type(base).__name__, "lm": type(lm).__name__, "module": module,
        "file": sys.modules[module].__file__, "prompt": inputs["input_ids"].shape[1], "ids": list(ids.shape),
        "pipeline": generated,
    }))
    """
)


def run(*command: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


def clean_environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MEGA_PLUGIN_AUTOREGISTER")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def test_wheel_install_loads_and_generates_without_naming_mega_plugin(tmp_path: Path) -> None:
    from _support.hub_cache import write_tiny_mega

    env = clean_environment(tmp_path / "hf-home")
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", source, env=env)
    (wheel,) = (tmp_path / "dist").glob("mega_plugin-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, env=env)
    python = venv / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", env=env).stdout.strip())
    # This environment's packages (torch, transformers, ...) as plain path entries, after the venv's own.
    (purelib / "zz_outer_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = (sys.executable, "-m", "pip", "--python", python)
    run(*pip, "install", "--no-deps", "-q", wheel, env=env)
    assert (purelib / PTH_NAME).read_text() == "import _mega_plugin_autoregister\n"
    record = next(purelib.glob("mega_plugin-*.dist-info")) / "RECORD"
    listed = {line.split(",")[0] for line in record.read_text().splitlines()}
    assert {PTH_NAME, HOOK_FILE} <= listed

    model_dir = write_tiny_mega(tmp_path / "tiny-mega-lm", head="MegaForCausalLM", is_decoder=True, bidirectional=False)
    assert "mega_plugin" not in CHILD
    done = run(python, "-c", CHILD, model_dir, env=env, cwd=tmp_path)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report["base"], report["lm"]) == ("MegaModel", "MegaForCausalLM")
    assert Path(report["file"]).is_relative_to(purelib), report["file"]  # the wheel, not the checkout
    assert report["ids"] == [1, report["prompt"] + 4]
    assert isinstance(report["pipeline"][0]["generated_text"], str)
    assert report["pipeline"][0]["generated_text"].startswith("Hello my dog")

    off = run(python, "-c", "import sys, transformers; print('mega' in transformers.models.auto.configuration_auto.CONFIG_MAPPING)",
              env={**env, "MEGA_PLUGIN_AUTOREGISTER": "0"}, cwd=tmp_path)
    assert off.stdout.strip() == "False"

    run(*pip, "uninstall", "-y", "-q", "mega-plugin", env=env)
    assert not (purelib / PTH_NAME).exists() and not (purelib / HOOK_FILE).exists()
    assert not (purelib / "mega_plugin").exists()
    after = run(python, "-W", "error", "-c", "import transformers, sys; print('mega_plugin' in sys.modules)", env=env, cwd=tmp_path)
    assert after.stdout.strip() == "False" and after.stderr == ""
