"""The startup hook ``_mega_plugin_autoregister`` (what ``mega_plugin_autoregister.pth`` imports).

Each case runs a fresh interpreter with ``-S`` (no site-packages: neither the real transformers
nor the real mega_plugin is visible) and a folder holding a copy of the hook module plus fake
``transformers`` / ``mega_plugin`` packages, so the hook is checked against a working, a broken
and a missing transformers, a broken mega_plugin and the off switch. The last test runs the hook
against the real packages of the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "_mega_plugin_autoregister.py"

sys.path.insert(0, str(ROOT))
import _mega_plugin_autoregister as hook  # noqa: E402

# A transformers whose __init__ makes it a lazy module (a ModuleType subclass with __getattr__) and
# marks when it finished, with a models.auto package; a mega_plugin that records what it saw.
FAKE_TRANSFORMERS = textwrap.dedent(
    """
    import sys, types

    class Lazy(types.ModuleType):
        def __getattr__(self, name):
            raise AttributeError(f"fake transformers has no {name}")

    sys.modules[__name__].__class__ = Lazy
    sys.modules[__name__].READY = True
    """
)
BROKEN_TRANSFORMERS = "raise RuntimeError('transformers is broken')\n"
FAKE_MEGA_PLUGIN = textwrap.dedent(
    """
    import sys
    transformers = sys.modules["transformers"]
    transformers.REGISTERED_BY = "mega_plugin"
    transformers.READY_WHEN_REGISTERED = getattr(transformers, "READY", False)
    transformers.AUTO_IMPORTED_WHEN_REGISTERED = "transformers.models.auto" in sys.modules
    transformers.MegaModel = "our MegaModel"
    """
)
BROKEN_MEGA_PLUGIN = "raise ImportError('mega_plugin is broken')\n"

REPORT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("always")
    caught = []
    warnings.showwarning = lambda message, category, *rest: caught.append(f"{category.__name__}: {message}")
    import _mega_plugin_autoregister as hook
    outcome = {"finder_installed": any(isinstance(f, hook.AutoRegisterFinder) for f in sys.meta_path)}
    try:
        import transformers
        outcome["registered_before_auto"] = "REGISTERED_BY" in vars(transformers)
        if sys.argv[1] == "auto":
            import transformers.models.auto
            import transformers.models.auto  # a second import must not register or warn again
        else:
            try:
                from transformers import MegaModel
                outcome["MegaModel"] = MegaModel
            except ImportError as error:
                outcome["MegaModel"] = f"ImportError: {error}"
        outcome["imported"] = True
        outcome["registered_by"] = vars(transformers).get("REGISTERED_BY")
        outcome["auto_imported_when_registered"] = getattr(transformers, "AUTO_IMPORTED_WHEN_REGISTERED", None)
        outcome["ready_when_registered"] = getattr(transformers, "READY_WHEN_REGISTERED", None)
        outcome["loader_restored"] = type(transformers.__loader__).__name__ != "_RegisterAfterLoad"
    except Exception as error:
        outcome["imported"] = False
        outcome["error"] = f"{type(error).__name__}: {error}"
    outcome["mega_plugin_imported"] = "mega_plugin" in sys.modules
    outcome["finder_left"] = any(isinstance(f, hook.AutoRegisterFinder) for f in sys.meta_path)
    outcome["warnings"] = caught
    print(json.dumps(outcome))
    """
)


def run_case(
    tmp_path: Path,
    *,
    transformers: str | None,
    mega_plugin: str | None,
    env: dict[str, str] | None = None,
    trigger: str = "auto",
) -> dict:
    """``trigger``: ``auto`` imports transformers.models.auto, ``names`` does ``from transformers import MegaModel``."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(HOOK, site / HOOK.name)
    packages = {"transformers": transformers, "transformers/models": "", "transformers/models/auto": "", "mega_plugin": mega_plugin}
    if transformers is None:
        packages = {"mega_plugin": mega_plugin}
    for name, body in packages.items():
        if body is not None:
            (site / name).mkdir()
            (site / name / "__init__.py").write_text(body)
    environment = {key: value for key, value in os.environ.items() if key != "MEGA_PLUGIN_AUTOREGISTER"}
    environment.update(PYTHONPATH=str(site), **(env or {}))
    done = subprocess.run(
        [sys.executable, "-S", "-c", REPORT, trigger], capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_registers_once_when_the_auto_package_is_imported(tmp_path: Path) -> None:
    outcome = run_case(tmp_path, transformers=FAKE_TRANSFORMERS, mega_plugin=FAKE_MEGA_PLUGIN)
    assert outcome["finder_installed"] and outcome["imported"], outcome
    assert outcome["registered_before_auto"] is False  # a plain `import transformers` stays light
    assert outcome["registered_by"] == "mega_plugin"
    assert outcome["ready_when_registered"] is True and outcome["auto_imported_when_registered"] is True
    assert outcome["loader_restored"] and not outcome["finder_left"]
    assert outcome["warnings"] == []


def test_a_mega_name_registers_and_returns_ours(tmp_path: Path) -> None:
    outcome = run_case(tmp_path, transformers=FAKE_TRANSFORMERS, mega_plugin=FAKE_MEGA_PLUGIN, trigger="names")
    assert outcome["MegaModel"] == "our MegaModel", outcome
    assert outcome["registered_by"] == "mega_plugin" and outcome["warnings"] == []


def test_a_mega_name_with_a_broken_mega_plugin_is_transformers_own_answer(tmp_path: Path) -> None:
    outcome = run_case(tmp_path, transformers=FAKE_TRANSFORMERS, mega_plugin=BROKEN_MEGA_PLUGIN, trigger="names")
    assert outcome["MegaModel"].startswith("ImportError"), outcome
    assert len(outcome["warnings"]) == 1


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_the_switch_turns_it_off(tmp_path: Path, value: str) -> None:
    outcome = run_case(
        tmp_path, transformers=FAKE_TRANSFORMERS, mega_plugin=FAKE_MEGA_PLUGIN, env={"MEGA_PLUGIN_AUTOREGISTER": value}
    )
    assert not outcome["finder_installed"] and outcome["imported"], outcome
    assert outcome["registered_by"] is None and not outcome["mega_plugin_imported"]


def test_nothing_happens_without_transformers(tmp_path: Path) -> None:
    outcome = run_case(tmp_path, transformers=None, mega_plugin=FAKE_MEGA_PLUGIN)
    assert outcome["imported"] is False and outcome["error"].startswith("ModuleNotFoundError"), outcome
    assert not outcome["mega_plugin_imported"] and outcome["warnings"] == []


def test_a_broken_transformers_raises_its_own_error_only(tmp_path: Path) -> None:
    outcome = run_case(tmp_path, transformers=BROKEN_TRANSFORMERS, mega_plugin=FAKE_MEGA_PLUGIN)
    assert outcome["imported"] is False, outcome
    assert outcome["error"] == "RuntimeError: transformers is broken"
    assert not outcome["mega_plugin_imported"] and outcome["warnings"] == []


def test_a_broken_mega_plugin_warns_once_and_transformers_works(tmp_path: Path) -> None:
    outcome = run_case(tmp_path, transformers=FAKE_TRANSFORMERS, mega_plugin=BROKEN_MEGA_PLUGIN)
    assert outcome["imported"] is True and outcome["registered_by"] is None, outcome
    assert len(outcome["warnings"]) == 1, outcome["warnings"]
    assert outcome["warnings"][0].startswith("RuntimeWarning: mega-plugin could not register")
    assert "mega_plugin is broken" in outcome["warnings"][0] and "MEGA_PLUGIN_AUTOREGISTER=0" in outcome["warnings"][0]


def test_a_missing_mega_plugin_warns_once(tmp_path: Path) -> None:
    outcome = run_case(tmp_path, transformers=FAKE_TRANSFORMERS, mega_plugin=None)
    assert outcome["imported"] is True and len(outcome["warnings"]) == 1, outcome


def test_the_finder_answers_only_its_two_imports() -> None:
    finder = hook.AutoRegisterFinder()
    for name in ("json", "torch", "transformers_extra", "transformers.models", "transformers.models.auto.x", "mega_plugin"):
        assert finder.find_spec(name) is None, name


def test_the_hook_knows_the_names_the_registration_binds() -> None:
    pytest.importorskip("transformers")
    from mega_plugin.adapters.hf.registration import TOP_LEVEL_NAMES

    assert hook.MEGA_NAMES == set(TOP_LEVEL_NAMES)


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("1", True), ("yes", True), ("0", False), (" Off ", False)])
def test_enabled_reads_the_switch(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool) -> None:
    if value is None:
        monkeypatch.delenv(hook.ENV_SWITCH, raising=False)
    else:
        monkeypatch.setenv(hook.ENV_SWITCH, value)
    assert hook.enabled() is expected


@pytest.mark.hf
def test_the_hook_registers_the_real_packages(tmp_path: Path) -> None:
    """A fresh interpreter that imports only the hook module and transformers gets our classes."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])  # this checkout's hook module and mega_plugin
        import _mega_plugin_autoregister
        import transformers
        assert "mega_plugin" not in sys.modules  # a plain import transformers registers nothing yet
        from transformers import MegaForCausalLM
        config = transformers.AutoConfig.for_model("mega", vocab_size=40, hidden_size=16, num_hidden_layers=1,
            intermediate_size=16, shared_representation_size=8, ema_projection_size=4, nffn_hidden_size=16)
        print(type(config).__module__, MegaForCausalLM.__module__)
        """
    )
    environment = {key: value for key, value in os.environ.items() if key != "MEGA_PLUGIN_AUTOREGISTER"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT)], capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["mega_plugin.adapters.hf.configuration_mega", "mega_plugin.adapters.hf.modeling_lm"]
