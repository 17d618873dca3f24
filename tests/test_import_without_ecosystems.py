"""The core and the CLI must import with neither transformers nor fairseq2 available.

Each check runs in a fresh interpreter (the current one, so the same environment) whose
``sys.meta_path`` is replaced by one finder that stands in front of all the original
finders and hides the blocked packages, so that they look exactly as if they were not
installed: ``import transformers`` raises ``ModuleNotFoundError``,
``importlib.util.find_spec("transformers")`` returns None and ``importlib.metadata``
does not list the distribution. (A finder that raises from ``find_spec`` would also make
the ``find_spec`` probe raise, which a real missing package never does.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Final

BLOCKED: Final = ("transformers", "fairseq2", "fairseq2n")
OK_LINE: Final = "IMPORT-CHECK-OK"

BLOCKER: Final = textwrap.dedent(
    f"""
    import importlib.abc
    import sys

    BLOCKED = {BLOCKED!r}

    def blocked(name):
        return name.partition(".")[0].lower().replace("-", "_") in BLOCKED

    class HideBlocked(importlib.abc.MetaPathFinder):
        def __init__(self, finders):
            self.finders = finders

        def find_spec(self, fullname, path=None, target=None):
            if blocked(fullname):
                return None  # the import system then raises ModuleNotFoundError
            for finder in self.finders:
                find = getattr(finder, "find_spec", None)
                spec = find(fullname, path, target) if find else None
                if spec is not None:
                    return spec
            return None

        def find_distributions(self, *args, **kwargs):
            for finder in self.finders:
                find = getattr(finder, "find_distributions", None)
                for dist in find(*args, **kwargs) if find else ():
                    if not blocked(dist.metadata["Name"] or ""):
                        yield dist

        def invalidate_caches(self):
            for finder in self.finders:
                if hasattr(finder, "invalidate_caches"):
                    finder.invalidate_caches()

    sys.meta_path[:] = [HideBlocked(list(sys.meta_path))]

    def leaked():
        return sorted(
            name for name, module in sys.modules.items()
            if module is not None and blocked(name)
        )
    """
)


def run_blocked(body: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``body`` after the blocker in a new interpreter, outside the checkout."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(body)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_core_and_cli_import_without_transformers_or_fairseq2(tmp_path: Path) -> None:
    result = run_blocked(
        f"""
        import mega_plugin
        import mega_plugin.core
        import mega_plugin.cli

        parser = mega_plugin.cli.build_parser()
        parser.format_help()
        assert not leaked(), f"imported: {{leaked()}}"
        print({OK_LINE!r})
        """,
        tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert OK_LINE in result.stdout, output


def test_the_blocker_blocks(tmp_path: Path) -> None:
    """Guard against a blocker that silently lets the packages through."""
    for name in ("transformers", "fairseq2"):
        result = run_blocked(
            f"""
            import importlib.metadata
            import importlib.util

            assert importlib.util.find_spec({name!r}) is None
            try:
                importlib.metadata.version({name!r})
            except importlib.metadata.PackageNotFoundError:
                pass
            else:
                raise SystemExit("importlib.metadata still sees {name}")
            try:
                import {name}
            except ModuleNotFoundError as error:
                assert error.name == {name!r}, error.name
                assert not leaked(), leaked()
                print({OK_LINE!r})
            else:
                raise SystemExit("{name} was imported despite the blocker")
            """,
            tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert OK_LINE in result.stdout, result.stdout + result.stderr
