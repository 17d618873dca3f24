"""setuptools build hook of mega-plugin: ship the startup ``.pth`` file in the wheel.

``build_py`` writes ``mega_plugin_autoregister.pth`` (one line: ``import _mega_plugin_autoregister``)
next to the packages in the build folder, so the wheel installs it into site-packages and lists it
in RECORD (``pip uninstall`` removes it). ``editable_wheel`` adds the same file to the editable
wheel (whose own ``__editable__.*.pth`` sorts first, so the hook module is importable when ours runs). Nothing here is
imported at run time; pyproject.toml names this module under ``[tool.setuptools.cmdclass]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH_NAME: Final = "mega_plugin_autoregister.pth"
PTH_LINE: Final = "import _mega_plugin_autoregister\n"


class BuildPyWithStartupHook(build_py):
    """``build_py`` plus the startup ``.pth`` file at the root of the build folder."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / PTH_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(PTH_LINE, encoding="utf-8")

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH_NAME)]


class EditableWheelWithStartupHook(editable_wheel):
    """``editable_wheel`` whose wheel also carries the startup ``.pth`` file."""

    def _select_strategy(self, *args: object, **kwargs: object) -> object:
        return _WithStartupPth(super()._select_strategy(*args, **kwargs))


class _WithStartupPth:
    """Wraps setuptools' editable strategy: writes what it writes, plus our ``.pth`` file."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __call__(self, wheel: object, files: list[str], mapping: object) -> object:
        result = self.inner(wheel, files, mapping)  # type: ignore[operator]
        wheel.writestr(PTH_NAME, PTH_LINE.encode("utf-8"))  # type: ignore[attr-defined]
        return result

    def __enter__(self) -> _WithStartupPth:
        self.inner.__enter__()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc_info: object) -> object:
        return self.inner.__exit__(*exc_info)  # type: ignore[attr-defined]
