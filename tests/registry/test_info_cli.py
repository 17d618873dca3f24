"""``mega-plugin info`` reports plugins, kernels, backends, presets, converters, adapters and ecosystems."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

from _support.plugins import fake_entry_points, unavailable_plugin
from mega_plugin.cli import main
from mega_plugin.commands import info


def test_info_json_from_the_command_line_shows_plugins_and_their_failures(installed_test_plugins: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mega_plugin", "info", "--json"],
        capture_output=True, text=True, env=installed_test_plugins.subprocess_env(),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    plugins = {(p["distribution"], p["name"]): p for p in report["plugins"]}
    assert plugins[("mega-plugin", "builtin")]["status"] == "loaded"
    example = plugins[("mega-plugin-example", "example")]
    assert (example["status"], example["version"], example["entry_point"]) == ("loaded", "0.1.0", "mega_plugin_example")
    broken = plugins[("mega-plugin-broken", "raises")]
    assert broken["status"] == "failed" and broken["error"].startswith("RuntimeError: this plugin fails halfway")
    assert "failed and was skipped" in done.stderr  # the warning names the plugin
    kernels = {(k["op"], k["name"]): k for k in report["kernels"]}
    assert kernels[("ema", "example_scan")]["source"] == "mega-plugin-example"
    assert kernels[("ema", "example_scan")]["available"] and kernels[("attention", "reference")]["available"]
    backends = {b["name"]: b for b in report["backends"]}
    assert backends["cpu_fast"]["source"] == "mega-plugin" and backends["cpu_fast"]["available"]
    assert "example_small" in [p["name"] for p in report["presets"]]
    assert {"fairseq-mega", "example-bare-hf"} <= {c["name"] for c in report["converters"]}
    adapters = {a["name"]: a for a in report["adapters"]}
    assert adapters["example-missing"] == {
        "name": "example-missing", "module": "mega_plugin_example", "requires": ["mega_plugin_example_not_installed"],
        "source": "mega-plugin-example", "available": False, "reason": "not installed: mega_plugin_example_not_installed",
        "description": "never available",
    }
    for package in ("torch", "transformers", "fairseq2"):
        try:
            expected = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            expected = None
        assert report["ecosystems"][package] == expected


def test_info_tables(fresh_registry: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for title in ("Plugins:", "Kernels:", "Backends:", "Presets:", "Converters:", "Adapters:", "Ecosystems:"):
        assert f"\n{title}\n" in f"\n{out}"
    assert "builtin = mega_plugin.registry.builtin" in out and "fairseq-mega" in out and "lra_pathx_chunk" in out


def test_an_unavailable_kernel_shows_its_reason(fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, ("unavailable", unavailable_plugin()))
    kernels = {k["name"]: k for k in info.collect()["kernels"]}
    assert kernels["needs_gpu"]["available"] is False and kernels["needs_gpu"]["reason"] == "no GPU here"
    assert "no: no GPU here" in info.render(info.collect())
