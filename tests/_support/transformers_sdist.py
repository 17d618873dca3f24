"""transformers' own common test mixins, imported from the sdist of the installed version.

``scripts/bootstrap_envs.sh`` downloads ``transformers-<version>.tar.gz`` (the source
distribution of exactly the transformers installed in the venv) into ``.venvs/sdists/``.
Its ``tests/`` folder holds ``test_modeling_common.py`` (ModelTesterMixin),
``test_configuration_common.py`` (ConfigTester) and ``test_pipeline_mixin.py``
(PipelineTesterMixin). The sdist does not ship every helper package those modules import
(``tests/generation``, ``tests/exporters``, ``tests/utils``, ``tests/pipelines``), so this
module loads the sdist's ``tests`` folder as the package ``transformers_sdist_tests`` with our
own stand-ins for the missing helpers (written here, never copied):

- ``generation.test_utils.GenerationTesterMixin``: an empty mixin. The generation tests live
  in that missing module; they cannot run from the sdist (a written skip in the test table).
- ``exporters.test_export.ExportTesterMixin``: an empty mixin, for the same reason.
- ``utils.test_configuration_utils.config_common_kwargs``: non-default values of common
  ``PretrainedConfig`` attributes that every config must store as given.

``load()`` returns the package, or raises ``SdistMissing`` with the reason (the tests skip on it).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tarfile
import types
from pathlib import Path
from typing import Final

PACKAGE: Final = "transformers_sdist_tests"

# The modules the sdist lacks, and what stands in for each (see the module docstring).
MISSING_HELPERS: Final = ("generation", "exporters", "utils", "pipelines")


class SdistMissing(RuntimeError):
    """The transformers sdist of the installed version is not in ``.venvs/sdists``."""


def sdist_directories() -> list[Path]:
    """Where ``bootstrap_envs.sh`` puts sdists: ``.venvs/sdists`` next to the running venv,
    and under the checkout this module belongs to."""
    checkout = Path(__file__).resolve().parents[2]
    candidates = [Path(sys.prefix).parent / "sdists", checkout / ".venvs" / "sdists"]
    return [path for index, path in enumerate(candidates) if path not in candidates[:index]]


def installed_version() -> str:
    import transformers

    return transformers.__version__


def tests_folder(version: str) -> Path:
    """The extracted ``tests/`` folder of ``transformers-<version>``; extracts the tarball once."""
    for directory in sdist_directories():
        tests = directory / f"transformers-{version}" / "tests"
        if (tests / "test_modeling_common.py").is_file():
            return tests
        tarball = directory / f"transformers-{version}.tar.gz"
        if tarball.is_file():
            with tarfile.open(tarball) as archive:
                members = [m for m in archive.getmembers() if m.name.startswith(f"transformers-{version}/tests/")]
                archive.extractall(directory, members=members, filter="data")
            if (tests / "test_modeling_common.py").is_file():
                return tests
    searched = ", ".join(str(path) for path in sdist_directories())
    raise SdistMissing(
        f"transformers {version} sdist not found in {searched}: run scripts/bootstrap_envs.sh "
        f"(it runs `pip download --no-deps --no-binary :all: transformers=={version}`)"
    )


def _stand_in(name: str, **attributes: object) -> None:
    module = types.ModuleType(f"{PACKAGE}.{name}")
    module.__dict__.update(attributes)
    sys.modules[module.__name__] = module


class _EmptyGenerationTesterMixin:
    """Stands in for the sdist's missing ``tests/generation/test_utils.py``."""


class _EmptyExportTesterMixin:
    """Stands in for the sdist's missing ``tests/exporters/test_export.py``."""


# Non-default values of attributes every PretrainedConfig stores as given (ours, by fact:
# transformers checks that a config keeps each common keyword it is built with).
CONFIG_COMMON_KWARGS: Final = {
    "return_dict": False,
    "output_hidden_states": True,
    "problem_type": "regression",
    "id2label": {0: "first", 1: "second"},
}


def load() -> types.ModuleType:
    """Import the sdist's ``tests`` folder as ``transformers_sdist_tests``."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    tests = tests_folder(installed_version())
    # transformers' tooling (direct_transformers_import) reads tests/__init__.py, which the
    # repository has (empty) and the sdist lacks.
    (tests / "__init__.py").touch()
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(tests)]
    sys.modules[PACKAGE] = package
    for folder in MISSING_HELPERS:
        if not (tests / folder).is_dir():
            _stand_in(folder, __path__=[])
    if not (tests / "generation" / "test_utils.py").is_file():
        _stand_in("generation.test_utils", GenerationTesterMixin=_EmptyGenerationTesterMixin)
    if not (tests / "exporters" / "test_export.py").is_file():
        _stand_in("exporters.test_export", ExportTesterMixin=_EmptyExportTesterMixin)
    if not (tests / "utils" / "test_configuration_utils.py").is_file():
        _stand_in("utils.test_configuration_utils", config_common_kwargs=dict(CONFIG_COMMON_KWARGS))
    return package


def load_module(name: str) -> types.ModuleType:
    """``load_module("test_modeling_common")`` -> the sdist's module of that name."""
    load()
    return importlib.import_module(f"{PACKAGE}.{name}")
